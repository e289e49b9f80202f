"""Hostile servers, twenty-second round: the record layer's protection itself, which rounds 1-21
(test_adversarial_hostile_servers*.py) only ever attacked by flipping a ciphertext byte (round 3)
or sending records of a forbidden length / an unknown type under valid protection.

Peers: test_adversarial_hostile_servers_6's hand-made TLS 1.2 server (through round 10's Hand),
TLS_RSA_WITH_AES_128_GCM_SHA256 (EC2x) and TLS_RSA_WITH_AES_128_CBC_SHA (EC2x and ML302), its
records sealed here field by field (explicit nonce, sequence number, additional data, MAC,
padding) with `cryptography` -- an independent implementation, never Mbed TLS; round 19's deaf
server (OpenSSL over memory BIOs, a 4 KiB window, its reader held); test_adversarial_dtls_paths'
hand-made UDP "server".  Covered (EC2x unless said):

* AES-GCM explicit nonces the sender is free to choose (RFC 5288 3: only uniqueness is asked
  of the SENDER; the receiver takes the nonce from the record): all-zero and reused on every
  record, all-0xFF, random, going backwards -- on data records (buffer, direct push) and on the
  server's Finished: a receiver such as Mbed TLS decrypts them all; every byte once, the
  session up, data both ways;
* GCM records whose protection does not match the session's record sequence (RFC 5246 6.2.3.3:
  the sequence number is in the additional data): a skipped and a repeated sequence number, a
  verbatim replay of the previous record, the explicit nonce changed after sealing, a record
  sealed with the CLIENT's write key (reflection), additional data with the ciphertext's
  length or another content type -- after data (buffer, direct push, transparent; apart from
  the data or in its TCP segment), at the "> " prompt (ERROR, 567), as the server's Finished
  (566 once, the modem's own Finished reflected among them): the data before it once, one
  "closed" (NO CARRIER online), state 4, the modem's one fatal bad_record_mac alert (Mbed TLS
  2.28 ssl_get_next_record: INVALID_MAC -> alert 20) decrypting under the modem's next
  sequence number, its FIN, never a byte of what followed, AT answering within a second, the
  id reusable; a session so ended is not resumed (RFC 5246 7.2.2);
* the same while the host streams online (records sealed by the worker's jobs, the worker
  stuttering, or held with a job waiting on it when the record comes): the alert in sequence
  behind an exact prefix of the stream; and from a server
  that does not read, the stream held by flow control: NO CARRIER at once, the alert behind
  the prefix once the server reads; if it never reads, AT+QSSLCLOSE answers at once and the
  connection is released;
* GCM application records shorter than explicit nonce + tag (0, 1, 8, 23 bytes) and 24 bytes
  of garbage: the same ending, at most one alert and fatal;
* CBC records whose MAC-then-encrypt structure is broken (RFC 5246 6.2.3.2): padding bytes not
  all equal to the padding length, SSL 3.0 style random padding, a padding length running past
  the record, a wrong MAC under valid padding, a ciphertext that is not a whole number of
  blocks, a record of the IV alone: bad_record_mac, the data before kept, one end report --
  EC2x, ML302 buffer ('+QSSLURC: "close",<ssid>') and connectmode 1 (NO CARRIER, REMOTE
  CLOSING); a premise test shows the CBC sealing itself right (minimal and maximal padding);
* 3000 x (three empty application records + a one-byte record) -- 12000 records, the empty
  ones as many in a row as Mbed TLS's nb_zero guard allows -- streamed while the host polls
  AT: every poll answered within a second, the 3000 bytes once and in order, the session up;
* ML302: the whole handshake and 40 records (a warning alert and an empty record among them)
  a byte per TCP segment while the host polls AT;
* DTLS: 3000 HelloVerifyRequests in a burst answering the first ClientHello, all message_seq
  0 (replays: a handful of ClientHellos) or counting 0, 1, 2 ... (each taken: the k-th
  ClientHello echoes the (k-1)-th cookie); AT answering within a second, 569 once at
  negotiatetime, nothing sent after it.

No bug found this round.  Checked each time: exact bytes on the pty, one end report, no ERROR log record or traceback
(ec2x_strict / ml302_strict), AT answering afterwards.
"""
from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import struct
import threading
import time

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tests.e2e import test_adversarial_hostile_servers_6 as h6
from tests.e2e import test_adversarial_hostile_servers_10 as h10
from tests.e2e.hostile_support import open_answer
from tests.e2e.socket_support import wait_for
from tests.e2e.test_adversarial_hostile_servers_4 import forget_answers
from tests.e2e.test_adversarial_seal_jobs import Feeder, Stutter, back_in_command_mode, gate, stream_bytes  # noqa: F401

CT_CCS, CT_ALERT, CT_HANDSHAKE, CT_APP = 20, 21, 22, 23
OK = h10.OK
NAME = h10.NAME
pattern = h6.pattern
Hand, at, ssl_open, recv, push_read, read_all = h10.Hand, h10.at, h10.ssl_open, h10.recv, h10.push_read, h10.read_all
state = h6.state
BAD_RECORD_MAC = b"\x02\x14"


@pytest.fixture
def gcm(ec2x_strict):
    host, advance, port = ec2x_strict
    assert host.at('AT+QSSLCFG="ciphersuite",1,0X009C') == OK
    return ec2x_strict


@pytest.fixture
def cbc(ec2x_strict):
    host, advance, port = ec2x_strict
    assert host.at('AT+QSSLCFG="ciphersuite",1,0X002F') == OK
    return ec2x_strict


@pytest.fixture
def ml(ml302_strict):
    host, advance, port = ml302_strict
    assert host.at('AT+QSSLCFG="ciphersuite",0,0X002F') == OK
    return ml302_strict


# == records sealed field by field ====================================================================
def gcm_seal(keys, ct: int, payload: bytes, *, explicit: bytes | None = None, seq: int | None = None,
             key: tuple[bytes, bytes] | None = None, aad_len: int | None = None,
             aad_type: int | None = None) -> bytes:
    """An AES-128-GCM record: the sequence number `seq` (default: the next one, counted) in the
    additional data, `explicit` on the wire and in the nonce (default: the sequence number)."""
    if seq is None:
        seq = keys.seq
        keys.seq += 1
    seqb = struct.pack(">Q", seq)
    nonce = seqb if explicit is None else explicit
    aad = (seqb + bytes([ct if aad_type is None else aad_type]) + b"\x03\x03"
           + struct.pack(">H", len(payload) if aad_len is None else aad_len))
    k, salt = key or (keys.key, keys.extra)
    return h6.record(ct, nonce + AESGCM(k).encrypt(salt + nonce, payload, aad))


def cbc_seal(keys, ct: int, payload: bytes, *, pad_bytes: bytes | None = None, flip_mac: bool = False) -> bytes:
    """An AES-128-CBC-SHA record (TLS 1.2: explicit IV), padding given whole if pad_bytes."""
    seq = struct.pack(">Q", keys.seq)
    keys.seq += 1
    mac = hmac.new(keys.extra, seq + bytes([ct]) + b"\x03\x03" + struct.pack(">H", len(payload)) + payload,
                   hashlib.sha1).digest()
    if flip_mac:
        mac = bytes([mac[0] ^ 0x01]) + mac[1:]
    body = payload + mac
    if pad_bytes is None:
        pad = 15 - len(body) % 16
        pad_bytes = bytes([pad]) * (pad + 1)
    body += pad_bytes
    assert len(body) % 16 == 0
    iv = os.urandom(16)
    enc = Cipher(algorithms.AES(keys.key), modes.CBC(iv)).encryptor()
    return h6.record(ct, iv + enc.update(body) + enc.finalize())


def _reader_thread(c) -> None:
    threading.Thread(target=c.reader, daemon=True).start()


def _at_is_prompt(host, command=at) -> None:
    t0 = time.monotonic()
    assert command(host, "AT") == OK
    assert time.monotonic() - t0 < 1.0


# == GCM explicit nonces the sender chooses ===========================================================
@pytest.mark.parametrize("mode", [0, 1], ids=["buffer", "push"])
def test_gcm_explicit_nonces_of_the_senders_choice_are_taken(gcm, emulator, mode):
    """Records whose explicit nonce is not the sequence number: all-zero (the same on every
    record), all-0xFF, random, and counting backwards -- each sealed correctly under that nonce
    with the right sequence number in the additional data.  RFC 5288 leaves the nonce to the
    sender; Mbed TLS (and so the module) decrypts every one: the host gets every byte once, in
    order, the session stays up and still carries data both ways."""
    host, advance, port = gcm
    pieces = [pattern(700 + 37 * i, 300 + i) for i in range(16)]
    nonces = ([bytes(8)] * 4 + [b"\xff" * 8] * 3 + [os.urandom(8) for _ in range(4)]
              + [struct.pack(">Q", 1000 - i) for i in range(5)])
    go = threading.Event()

    def script(c) -> None:
        c.handshake()
        go.wait(10)
        c.sock.sendall(b"".join(gcm_seal(c.tx, CT_APP, p, explicit=n) for p, n in zip(pieces, nonces)))
        c.echo()

    with Hand(emulator, script) as server:
        ssl_open(host, 1, mode)
        assert open_answer(host, 1) == 0
        go.set()
        want = b"".join(pieces)
        if mode == 1:
            got, sizes = push_read(host, 1, len(want))
            assert got == want
        else:
            host.seen(b'+QSSLURC: "recv",1\r\n')
            assert read_all(host, 1, len(want)) == want
            assert recv(host, 1) == b""
        assert b'"closed"' not in bytes(host.transcript)
        assert state(host, 1) == 2
        assert server.conns[0].alerts == []
        if mode == 1:
            assert host.send_data(1, b"nonces of the server's choice") == b"\r\nSEND OK\r\n"
            assert push_read(host, 1, 29)[0] == b"nonces of the server's choice"
            assert at(host, "AT+QSSLCLOSE=1,0") == OK
        else:
            h6.round_trip_and_close(host, 1, b"nonces of the server's choice")


# == GCM records that do not match the session's sequence =============================================
def _wrong_record(c, kind: str, previous: bytes) -> bytes:
    tx = c.tx
    payload = b"never to be seen: " + kind.encode()
    if kind == "skipped_sequence_number":
        return gcm_seal(tx, CT_APP, payload, seq=tx.seq + 1)
    if kind == "repeated_sequence_number":
        return gcm_seal(tx, CT_APP, payload, seq=tx.seq - 1)
    if kind == "replay_of_the_previous_record":
        return previous
    if kind == "explicit_nonce_changed_after_sealing":
        wire = bytearray(gcm_seal(tx, CT_APP, payload))
        wire[5 + 7] ^= 0x01
        return bytes(wire)
    if kind == "sealed_with_the_clients_key":
        return gcm_seal(tx, CT_APP, payload, key=(c.rx.key, c.rx.extra))
    if kind == "additional_data_with_the_ciphertext_length":
        return gcm_seal(tx, CT_APP, payload, aad_len=8 + len(payload) + 16)
    if kind == "additional_data_of_another_type":
        return gcm_seal(tx, CT_APP, payload, aad_type=CT_HANDSHAKE)
    raise AssertionError(kind)


WRONG = ["skipped_sequence_number", "repeated_sequence_number", "replay_of_the_previous_record",
         "explicit_nonce_changed_after_sealing", "sealed_with_the_clients_key",
         "additional_data_with_the_ciphertext_length", "additional_data_of_another_type"]


def _bad_mac_ending(host, server, cid: int) -> None:
    """After the data: state 4, the modem's one fatal bad_record_mac alert, its FIN."""
    assert state(host, cid) == 4
    conn = server.conns[0]
    wait_for(conn.eof.is_set, 5, "the emulator ends the connection")
    assert conn.alerts == [BAD_RECORD_MAC], conn.alerts
    assert bytes(conn.plain) == b""
    assert b"never to be seen" not in bytes(host.transcript)


@pytest.mark.parametrize("kind", WRONG)
def test_gcm_record_out_of_the_sessions_sequence_ends_it(gcm, emulator, kind):
    """Data (two records), then a record whose GCM protection does not fit the session (see
    WRONG), then a valid record: the data once, one "closed", state 4, the modem's fatal
    bad_record_mac (Mbed TLS 2.28 sends it for INVALID_MAC over TLS), its FIN, nothing of
    what followed; AT prompt; the id opens again."""
    host, advance, port = gcm
    data = [pattern(1800, 310), pattern(900, 311)]
    go = threading.Event()

    def script(c) -> None:
        c.handshake()
        _reader_thread(c)
        first = c.app(data[0])
        second = c.app(data[1])
        c.sock.sendall(first + second)
        go.wait(10)
        c.sock.sendall(_wrong_record(c, kind, second) + c.app(b"never to be seen after"))
        c.eof.wait(10)

    with Hand(emulator, script) as server:
        ssl_open(host, 2)
        assert open_answer(host, 2) == 0
        host.seen(b'+QSSLURC: "recv",2\r\n')
        go.set()
        host.seen(b'+QSSLURC: "closed",2\r\n')
        _at_is_prompt(host)
        assert read_all(host, 2, 2700) == b"".join(data)
        assert recv(host, 2) == b""
        _bad_mac_ending(host, server, 2)
        assert at(host, "AT+QSSLCLOSE=2") == OK
        assert host.transcript.count(b'+QSSLURC: "closed",2') == 1
        assert host.quiet_for(0.1) == b""
        h10.reopen_works(host, server, 2)


@pytest.mark.parametrize("glued", [False, True], ids=["apart", "one_segment"])
@pytest.mark.parametrize("kind", ["skipped_sequence_number", "replay_of_the_previous_record"])
def test_gcm_record_out_of_sequence_push_mode(gcm, emulator, kind, glued):
    """Direct push: the data pushed framed, then one "closed", the same alert and FIN -- also
    when the data and the bad record come in one TCP segment (one read of the engine)."""
    host, advance, port = gcm
    data = [pattern(2500, 320), pattern(300, 321)]

    def script(c) -> None:
        c.handshake()
        _reader_thread(c)
        first = c.app(data[0])
        second = c.app(data[1])
        bad = _wrong_record(c, kind, second) + c.app(b"never to be seen after")
        if glued:
            c.sock.sendall(first + second + bad)
        else:
            c.sock.sendall(first + second)
            time.sleep(0.2)
            c.sock.sendall(bad)
        c.eof.wait(10)

    with Hand(emulator, script) as server:
        ssl_open(host, 3, 1)
        assert open_answer(host, 3) == 0
        assert push_read(host, 3, 2800)[0] == b"".join(data)
        host.seen(b'+QSSLURC: "closed",3\r\n')
        _at_is_prompt(host)
        _bad_mac_ending(host, server, 3)
        assert host.quiet_for(0.2) == b""
        assert at(host, "AT+QSSLCLOSE=3") == OK
        assert host.transcript.count(b'+QSSLURC: "closed",3') == 1


@pytest.mark.parametrize("glued", [False, True], ids=["apart", "one_segment"])
@pytest.mark.parametrize("kind", ["repeated_sequence_number", "sealed_with_the_clients_key"])
def test_gcm_record_out_of_sequence_transparent_mode(gcm, emulator, kind, glued):
    """Transparent: the data, then NO CARRIER alone; the alert and FIN as in buffer mode (the
    data and the bad record apart, or in one TCP segment)."""
    host, advance, port = gcm
    data = pattern(5000, 330)
    go = threading.Event()

    def script(c) -> None:
        c.handshake()
        _reader_thread(c)
        last = c.app(data)
        bad = _wrong_record(c, kind, last) + c.app(b"never to be seen after")
        if glued:
            c.sock.sendall(last + bad)
        else:
            c.sock.sendall(last)
            go.wait(10)
            c.sock.sendall(bad)
        c.eof.wait(10)

    with Hand(emulator, script) as server:
        assert at(host, f'AT+QSSLOPEN=1,1,4,"{NAME}",443,2') == b"\r\nCONNECT\r\n"
        assert host.read_exactly(len(data), timeout=10) == data
        go.set()
        assert host.read_until(b"\r\nNO CARRIER\r\n", timeout=5) == b"\r\nNO CARRIER\r\n"
        _at_is_prompt(host)
        _bad_mac_ending(host, server, 4)
        assert at(host, "AT+QSSLCLOSE=4") == OK
        assert host.quiet_for(0.2) == b""


@pytest.mark.parametrize("size", [0, 1, 8, 23, 24])
def test_gcm_application_record_shorter_than_nonce_and_tag(gcm, emulator, size):
    """An application record of `size` ciphertext bytes (explicit nonce 8 + tag 16 = 24: any
    shorter one cannot even hold them; 24 bytes of zeros fail the tag): the data before once,
    one "closed", state 4, the modem's alerts (at most one) fatal, its FIN."""
    host, advance, port = gcm
    data = pattern(3100, 340 + size)

    def script(c) -> None:
        c.handshake()
        _reader_thread(c)
        c.sock.sendall(c.app(data))
        time.sleep(0.2)
        c.sock.sendall(h6.record(CT_APP, bytes(size)) + c.app(b"never to be seen after"))
        c.eof.wait(10)

    with Hand(emulator, script) as server:
        ssl_open(host, 0)
        assert open_answer(host, 0) == 0
        host.seen(b'+QSSLURC: "closed",0\r\n')
        _at_is_prompt(host)
        assert read_all(host, 0, len(data)) == data
        assert recv(host, 0) == b""
        assert state(host, 0) == 4
        conn = server.conns[0]
        wait_for(conn.eof.is_set, 5, "the emulator ends the connection")
        assert len(conn.alerts) <= 1 and all(a[0] == 2 for a in conn.alerts), conn.alerts
        assert bytes(conn.plain) == b""
        assert b"never to be seen" not in bytes(host.transcript)
        assert at(host, "AT+QSSLCLOSE=0") == OK
        assert host.transcript.count(b'+QSSLURC: "closed",0') == 1


# == CBC records whose MAC-then-encrypt structure is broken ============================================
def _broken_cbc(c, kind: str) -> bytes:
    tx = c.tx
    payload = b"never to be seen: " + kind.encode() + b"." * 50     # 100 bytes + MAC 20: pad 7
    payload = payload[:100].ljust(100, b".")
    if kind == "padding_bytes_not_all_the_length":
        return cbc_seal(tx, CT_APP, payload, pad_bytes=b"\x07" * 3 + b"\x06" + b"\x07" * 4)
    if kind == "ssl3_style_random_padding":
        return cbc_seal(tx, CT_APP, payload, pad_bytes=bytes([1, 2, 3, 4, 5, 6, 9]) + b"\x07")
    if kind == "padding_length_past_the_record":
        return cbc_seal(tx, CT_APP, payload, pad_bytes=b"\x07" * 7 + b"\xff")
    if kind == "wrong_mac_under_valid_padding":
        return cbc_seal(tx, CT_APP, payload, flip_mac=True)
    if kind == "not_a_whole_number_of_blocks":
        wire = cbc_seal(tx, CT_APP, payload)
        body = wire[5:] + b"\x00" * 5
        return h6.record(CT_APP, body)
    if kind == "the_iv_alone":
        tx.seq += 1
        return h6.record(CT_APP, os.urandom(16))
    raise AssertionError(kind)


BROKEN_CBC = ["padding_bytes_not_all_the_length", "ssl3_style_random_padding", "padding_length_past_the_record",
              "wrong_mac_under_valid_padding", "not_a_whole_number_of_blocks", "the_iv_alone"]


def test_cbc_premise_the_valid_seal_is_taken(cbc, emulator):
    """The CBC sealing here is right: records of 0 .. 300 bytes with minimal and maximal
    padding reach the host exact (so a failure below is the broken field's)."""
    host, advance, port = cbc
    pieces = [pattern(n, 350 + n) for n in (1, 15, 16, 100, 300)]

    def script(c) -> None:
        c.handshake()
        wire = b""
        for p in pieces:
            wire += cbc_seal(c.tx, CT_APP, p)
            body_len = len(p) + 20
            least = 15 - body_len % 16
            pad = least + (255 - least) // 16 * 16                      # the largest legal padding
            wire += cbc_seal(c.tx, CT_APP, p, pad_bytes=bytes([pad]) * (pad + 1))
        c.sock.sendall(wire)
        c.echo()

    with Hand(emulator, script, suite=h6.RSA_CBC) as server:
        ssl_open(host, 5)
        assert open_answer(host, 5) == 0
        want = b"".join(p + p for p in pieces)
        host.seen(b'+QSSLURC: "recv",5\r\n')
        assert read_all(host, 5, len(want)) == want
        assert server.conns[0].alerts == []
        h6.round_trip_and_close(host, 5, b"cbc premise")


@pytest.mark.parametrize("kind", BROKEN_CBC)
def test_cbc_record_with_broken_padding_or_mac_ends_the_session(cbc, emulator, kind):
    """EC2x, AES128-SHA: data, then a record whose CBC structure is broken (see BROKEN_CBC),
    then a valid record: the data once, one "closed", state 4, the modem's fatal bad_record_mac
    (Mbed TLS 2.28 answers every one of these INVALID_MAC), its FIN, the id reusable."""
    host, advance, port = cbc
    data = pattern(2600, 360)

    def script(c) -> None:
        c.handshake()
        _reader_thread(c)
        c.sock.sendall(c.app(data))
        time.sleep(0.2)
        c.sock.sendall(_broken_cbc(c, kind) + c.app(b"never to be seen after"))
        c.eof.wait(10)

    with Hand(emulator, script, suite=h6.RSA_CBC) as server:
        ssl_open(host, 1)
        assert open_answer(host, 1) == 0
        host.seen(b'+QSSLURC: "closed",1\r\n')
        _at_is_prompt(host)
        assert read_all(host, 1, len(data)) == data
        assert recv(host, 1) == b""
        _bad_mac_ending(host, server, 1)
        assert at(host, "AT+QSSLCLOSE=1") == OK
        assert host.transcript.count(b'+QSSLURC: "closed",1') == 1
        h10.reopen_works(host, server, 1)


@pytest.mark.parametrize("kind", ["padding_bytes_not_all_the_length", "padding_length_past_the_record",
                                  "wrong_mac_under_valid_padding", "not_a_whole_number_of_blocks"])
def test_ml302_cbc_record_with_broken_padding_or_mac_ends_the_session(ml, emulator, kind):
    """ML302 buffer mode, AES128-SHA: the same: the data once, one '+QSSLURC: "close",<ssid>',
    the modem's fatal bad_record_mac, its FIN, nothing after; the ssid opens again."""
    host, advance, port = ml
    data = pattern(2200, 370)

    def script(c) -> None:
        c.handshake()
        _reader_thread(c)
        c.sock.sendall(c.app(data))
        time.sleep(0.2)
        c.sock.sendall(_broken_cbc(c, kind) + c.app(b"never to be seen after"))
        c.eof.wait(10)

    with Hand(emulator, script, suite=h6.RSA_CBC) as server:
        h10.ml_open(host, 2)
        assert h10.ml_answer(host, 2) == 0
        host.seen(b'+QSSLURC: "close",2\r\n')
        _at_is_prompt(host, h10.ml_at)
        host.seen(b'+QSSLURC: "recv",1,2\r\n')
        assert h10.ml_read_all(host, 2, len(data)) == data
        assert h10.ml_recv(host, 2) == b""
        conn = server.conns[0]
        wait_for(conn.eof.is_set, 5, "the emulator ends the connection")
        assert conn.alerts == [BAD_RECORD_MAC], conn.alerts
        assert b"never to be seen" not in bytes(host.transcript)
        assert host.transcript.count(b'+QSSLURC: "close",2') == 1
        h10.ml_close(host, 2)
        h10.ml_reopen_works(host, server, 2)


# == a stream of empty records ===========================================================================
def test_empty_record_stream_keeps_at_prompt_and_every_byte(gcm, emulator):
    """3000 x (three empty application records + a one-byte record), 12000 records streamed in
    segments of 100 groups with pauses, while the host polls AT: each poll answered within a
    second; the 3000 bytes once and in order; no "closed" (Mbed TLS's nb_zero guard counts
    consecutive empty records only); the session up, data both ways."""
    host, advance, port = gcm
    want = pattern(3000, 380)
    done = threading.Event()
    go = threading.Event()

    def script(c) -> None:
        c.handshake()
        go.wait(10)
        groups = [b"".join(gcm_seal(c.tx, CT_APP, b"") for _ in range(3))
                  + gcm_seal(c.tx, CT_APP, want[i:i + 1]) for i in range(len(want))]
        for i in range(0, len(groups), 100):
            c.sock.sendall(b"".join(groups[i:i + 100]))
            time.sleep(0.01)
        done.set()
        c.echo()

    with Hand(emulator, script) as server:
        ssl_open(host, 3)
        assert open_answer(host, 3) == 0
        go.set()
        worst, polls = 0.0, 0
        while not done.is_set() or polls < 3:
            polls += 1
            t0 = time.monotonic()
            answer = at(host, "AT")
            worst = max(worst, time.monotonic() - t0)
            assert answer == OK, answer
        assert worst < 1.0, worst
        assert read_all(host, 3, len(want)) == want
        assert recv(host, 3) == b""
        assert b'"closed"' not in bytes(host.transcript)
        assert state(host, 3) == 2
        assert server.conns[0].alerts == []
        h6.round_trip_and_close(host, 3, b"after 12000 records")


# == the modem's own alert behind a stream sealed by jobs ==================================================
@pytest.mark.parametrize("worker", ["stuttering", "held"])
@pytest.mark.parametrize("kind", ["skipped_sequence_number", "sealed_with_the_clients_key"])
def test_bad_record_while_the_host_streams_online_alert_in_sequence(gcm, emulator, gate, kind, worker):
    """Transparent mode, the host streaming as fast as the pty takes it (records sealed by
    the worker's jobs; the worker stuttering, or held from before the bad record until after
    NO CARRIER -- a job waiting on it when the record comes); after 256 KiB the server sends a
    record out of the session's sequence: NO CARRIER; the server decrypts, in order, an exact
    prefix of the stream and then the modem's fatal bad_record_mac -- sealed under the
    sequence number after the last data record (a record out of order would fail the
    server's AEAD check); then the emulator's FIN.  The port reads the host again,
    AT+QSSLCLOSE answers."""
    host, advance, port = gcm
    got_enough, fire = threading.Event(), threading.Event()

    def script(c) -> None:
        c.handshake()
        while len(c.plain) < (256 << 10):
            ct, payload = c.read_record()
            plain = c.rx.open(ct, payload)
            assert ct == CT_APP, (ct, plain)
            c.plain += plain
        got_enough.set()
        assert fire.wait(10)
        c.sock.sendall(_wrong_record(c, kind, b""))
        c.reader()

    with Hand(emulator, script) as server:
        assert at(host, f'AT+QSSLOPEN=1,1,4,"{NAME}",443,2') == b"\r\nCONNECT\r\n"
        blob = stream_bytes(16 << 20)
        feeder = Feeder(host, blob)
        deadline = time.monotonic() + 15
        stutter = Stutter(gate) if worker == "stuttering" else None
        if stutter:
            stutter.__enter__()
        try:
            while not got_enough.is_set():
                assert time.monotonic() < deadline
                feeder.pump()
                time.sleep(0.001)
            if worker == "held":
                gate.shut()
                held_from = gate.submitted
                until = time.monotonic() + 0.3
                while time.monotonic() < until:
                    feeder.pump()
                    time.sleep(0.001)
                assert gate.submitted > held_from        # (a job waits on the held worker)
            fire.set()
            deadline = time.monotonic() + 10
            while b"NO CARRIER\r\n" not in host.pending:
                assert time.monotonic() < deadline, bytes(host.pending[-200:])
                feeder.pump()
                host._fill()
        finally:
            if stutter:
                stutter.__exit__(None, None, None)
            gate.open()
        conn = server.conns[0]
        wait_for(conn.eof.is_set, 10, "the emulator ends the connection")
        assert conn.alerts == [BAD_RECORD_MAC], conn.alerts
        received = bytes(conn.plain)
        assert len(received) >= (256 << 10) and blob.startswith(received)
        assert gate.submitted > 0              # (the premise: jobs sealed the stream)
        back_in_command_mode(emulator, port, host)
        assert host.at("AT+QSSLCLOSE=4") == OK


# == the server's Finished: the first record under the new keys ==============================================
def _finished_glue(kind: str):
    """Hand glue: write 1 (CCS + the server's Finished) re-sealed per kind."""
    def glue(n, c, data):
        if n != 1:
            return data
        msg, tx = c.transcript[-1], c.tx
        if kind == "random_explicit_nonce":
            fin = gcm_seal(tx, CT_HANDSHAKE, msg, seq=0, explicit=os.urandom(8))
        elif kind == "all_ff_explicit_nonce":
            fin = gcm_seal(tx, CT_HANDSHAKE, msg, seq=0, explicit=b"\xff" * 8)
        elif kind == "wrong_sequence_number":
            fin = gcm_seal(tx, CT_HANDSHAKE, msg, seq=1)
        elif kind == "nonce_changed_after_sealing":
            fin = bytearray(gcm_seal(tx, CT_HANDSHAKE, msg, seq=0))
            fin[5] ^= 0x80
            fin = bytes(fin)
        elif kind == "the_modems_own_finished_reflected":
            fin = gcm_seal(tx, CT_HANDSHAKE, c.transcript[-2], seq=0, key=(c.rx.key, c.rx.extra))
        else:
            raise AssertionError(kind)
        return h6.record(CT_CCS, b"\x01") + fin
    return glue


FINISHED = {"random_explicit_nonce": 0, "all_ff_explicit_nonce": 0, "wrong_sequence_number": 566,
            "nonce_changed_after_sealing": 566, "the_modems_own_finished_reflected": 566}


@pytest.mark.parametrize("kind", list(FINISHED))
def test_server_finished_protection(gcm, emulator, kind):
    """The server's Finished -- the first record under the new keys -- with an explicit nonce
    of the server's choice (opens: RFC 5288; data both ways), or sealed under the wrong
    sequence number, its nonce changed after sealing, or the modem's own Finished reflected
    back (sealed with the client's key): one "+QSSLOPEN: <id>,566", QIGETERROR 566, the
    modem's fatal bad_record_mac (under its new keys), the id reusable."""
    host, advance, port = gcm
    mark = len(host.transcript)
    with Hand(emulator, glue=_finished_glue(kind)) as server:
        ssl_open(host, 1)
        want = FINISHED[kind]
        assert open_answer(host, 1) == want
        _at_is_prompt(host)
        conn = server.conns[0]
        if want == 0:
            h6.round_trip_and_close(host, 1, b"finished under a nonce of the server's choice")
            # (the close_notify reaches the server's thread after the close's OK: a full run
            # under load read the alerts before it came)
            wait_for(lambda: conn.alerts, 5, "the modem's close_notify")
            assert conn.alerts == [b"\x01\x00"], conn.alerts
        else:
            assert h6.qigeterror(host) == 566
            wait_for(conn.eof.is_set, 5, "the emulator ends the connection")
            assert conn.alerts == [BAD_RECORD_MAC], conn.alerts
            assert bytes(host.transcript[mark:]).count(b"+QSSLOPEN: 1,") == 1
            assert host.quiet_for(0.2) == b""
            h10.reopen_works(host, server, 1)


# == a bad record while the host sits at a prompt, and online on the ML302 =====================================
@pytest.mark.parametrize("kind", ["skipped_sequence_number", "additional_data_of_another_type"])
def test_bad_record_while_the_host_is_at_the_send_prompt(gcm, emulator, kind):
    """The host has the "> " of AT+QSSLSEND=1,20 when a record out of the session's sequence
    comes: the modem's fatal alert and FIN at once (nothing of the host's is sealed after it);
    the host's 20 bytes then: ERROR, QIGETERROR 567, one "closed", the data before readable."""
    host, advance, port = gcm
    first = pattern(900, 390)
    go = threading.Event()

    def script(c) -> None:
        c.handshake()
        _reader_thread(c)
        last = c.app(first)
        c.sock.sendall(last)
        go.wait(10)
        c.sock.sendall(_wrong_record(c, kind, last))
        c.eof.wait(10)

    with Hand(emulator, script) as server:
        ssl_open(host, 1)
        assert open_answer(host, 1) == 0
        host.seen(b'+QSSLURC: "recv",1\r\n')
        host.write(b"AT+QSSLSEND=1,20\r")
        assert host.read_until(re.compile(rb"> |ERROR\r\n")) == b"\r\n> "
        go.set()
        conn = server.conns[0]
        wait_for(conn.eof.is_set, 5, "the emulator ends the connection at the prompt")
        assert conn.alerts == [BAD_RECORD_MAC], conn.alerts
        host.write(b"D" * 20)
        answer = host.read_until(re.compile(rb"\r\n(SEND OK|SEND FAIL|ERROR)\r\n"))
        assert answer == b"\r\nERROR\r\n"
        assert h6.qigeterror(host) == 567
        host.seen(b'+QSSLURC: "closed",1\r\n')
        assert read_all(host, 1, len(first)) == first
        assert recv(host, 1) == b""
        assert state(host, 1) == 4
        assert bytes(conn.plain) == b""
        assert at(host, "AT+QSSLCLOSE=1") == OK
        assert host.transcript.count(b'+QSSLURC: "closed",1') == 1


@pytest.mark.parametrize("kind", ["padding_bytes_not_all_the_length", "wrong_mac_under_valid_padding"])
def test_ml302_transparent_broken_cbc_record(ml, emulator, kind):
    """ML302 connectmode 1 (AES128-SHA): CONNECT, the data, then a broken CBC record: exactly
    the data, NO CARRIER and nothing else, the modem's fatal bad_record_mac, its FIN, REMOTE
    CLOSING, AT+QSSLCLOSE answers; the ssid opens again."""
    host, advance, port = ml
    data = pattern(4000, 395)
    go = threading.Event()

    def script(c) -> None:
        c.handshake()
        _reader_thread(c)
        go.wait(10)
        c.sock.sendall(c.app(data))
        time.sleep(0.2)
        c.sock.sendall(_broken_cbc(c, kind) + c.app(b"never to be seen after"))
        c.eof.wait(10)

    with Hand(emulator, script, suite=h6.RSA_CBC) as server:
        host.write(f'AT+QSSLOPEN=4,0,"{NAME}",443,1\r'.encode())
        assert host.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
        go.set()
        assert host.read_exactly(len(data), timeout=10) == data
        assert host.read_until(b"NO CARRIER\r\n", timeout=10) == b"\r\nNO CARRIER\r\n"
        assert host.quiet_for(0.3) == b""
        conn = server.conns[0]
        wait_for(conn.eof.is_set, 5, "the modem's end")
        assert conn.alerts == [BAD_RECORD_MAC], conn.alerts
        assert h10.ml_state(host, 4) == "REMOTE CLOSING"
        h10.ml_close(host, 4)
        h10.ml_reopen_works(host, server, 4)


# == a session the modem ended with its own fatal alert is never resumed =========================================
@pytest.mark.parametrize("kind", ["skipped_sequence_number", "sealed_with_the_clients_key"])
def test_session_ended_by_the_modems_bad_record_mac_is_not_resumed(gcm, emulator, kind):
    """Session ids (the hand server issues one per full handshake).  Premise: an open closed
    by the host is resumed by the next.  Then a resumed session meets a record out of its
    sequence: the modem's fatal bad_record_mac ends it -- RFC 5246 7.2.2: a connection ended
    by a fatal alert must not be resumed -- so the next open offers no session id (or one the
    server never resumes) and runs a full handshake, which carries data."""
    host, advance, port = gcm
    plan = {"n": 0}

    def script(c) -> None:
        c.handshake()
        plan["n"] += 1
        if plan["n"] == 2:
            _reader_thread(c)
            last = c.app(b"resumed, then hostile")
            c.sock.sendall(last)
            time.sleep(0.2)
            c.sock.sendall(_wrong_record(c, kind, last))
            c.eof.wait(10)
            return
        c.echo()

    with Hand(emulator, script) as server:
        ssl_open(host, 1)
        assert open_answer(host, 1) == 0
        h6.round_trip_and_close(host, 1, b"first")
        forget_answers(host, 1)
        ssl_open(host, 1)
        assert open_answer(host, 1) == 0
        host.seen(b'+QSSLURC: "closed",1\r\n')
        assert server.conns[1].resumed                        # (the premise)
        assert read_all(host, 1, 21) == b"resumed, then hostile"
        wait_for(server.conns[1].eof.is_set, 5, "the modem's end")
        assert server.conns[1].alerts == [BAD_RECORD_MAC]
        assert at(host, "AT+QSSLCLOSE=1") == OK
        forget_answers(host, 1)
        ssl_open(host, 1)
        assert open_answer(host, 1) == 0
        offered = server.hellos[2].session_id
        assert not server.conns[2].resumed, "a session ended by the modem's fatal alert was resumed"
        assert offered == b"" or offered not in server.sessions or offered != server.hellos[1].session_id
        h6.round_trip_and_close(host, 1, b"full handshake")


# == DTLS: a burst of HelloVerifyRequests ====================================================================
@pytest.mark.parametrize("seqs", ["one_message_seq", "counting_message_seq"])
def test_dtls_burst_of_hello_verify_requests(ec2x_strict, emulator, seqs):
    """A UDP "server" answering the first ClientHello with 3000 HelloVerifyRequests in a
    burst, each in its own datagram with its own cookie and record number -- all with
    message_seq 0 (one answer replayed; Mbed TLS takes the first and drops the rest as an
    old message), or message_seq 0, 1, 2 ... (each the one Mbed TLS expects next: it takes
    every one -- it sets no limit on HelloVerifyRequests -- and answers each with a new
    ClientHello carrying that cookie).  AT answers within a second throughout; one message_seq:
    no storm of ClientHellos (a handful), the second echoing the first cookie; counting: the
    ClientHello of message_seq k echoes the cookie of message_seq k-1, in order; the open ends once, 569 at negotiatetime on the modem
    clock, nothing leaves after it; the id is free again."""
    from emulator.testing.peers.dtls_wire import hello_verify_request, is_client_hello
    from tests.e2e.test_adversarial_dtls_paths import HostileServer, alive, answers, dtls_ready, one_answer, start_open

    host, advance, _ = ec2x_strict
    burst_done = threading.Event()

    def answer(index, data):
        if index != 0:
            return []
        out = [hello_verify_request(i.to_bytes(4, "big") * 4, msg_seq=0 if seqs == "one_message_seq" else i,
                                    rec_seq=i) for i in range(3000)]
        burst_done.set()
        return out

    with HostileServer(answer) as hostile:
        dtls_ready(host, emulator, hostile.port, negotiatetime=10)
        start_open(host)
        assert burst_done.wait(5)
        for _ in range(10):
            _at_is_prompt(host, lambda h, line: h.at(line))
            time.sleep(0.05)
        last, deadline = -1, time.monotonic() + 10
        while len(hostile.received) != last:           # (until the modem has answered all it takes)
            assert time.monotonic() < deadline
            last = len(hostile.received)
            _at_is_prompt(host, lambda h, line: h.at(line))
            time.sleep(0.3)
        hellos = list(hostile.received)
        assert all(is_client_hello(d) for d in hellos)
        if seqs == "one_message_seq":
            assert 2 <= len(hellos) <= 8, len(hellos)      # (no storm: the replays are dropped)
        else:
            assert len(hellos) >= 6                        # (each next one in order is a new flight)
        # the ClientHello of message_seq m echoes the cookie of the HelloVerifyRequest of
        # message_seq m-1 (the hostile server's own socket may drop some: it is busy sending)
        numbers = [int.from_bytes(d[17:19], "big") for d in hellos]
        assert numbers[0] == 0 and numbers == sorted(set(numbers)), numbers[:20]
        for d, m in zip(hellos[1:], numbers[1:]):
            assert (m - 1 if seqs != "one_message_seq" else 0).to_bytes(4, "big") * 4 in d, m
        if seqs == "one_message_seq":
            assert numbers[1] == 1
        assert not answers(host)
        advance(10.5)
        assert one_answer(host) == 569
        n = len(hostile.received)
        advance(5)
        time.sleep(0.3)
        assert len(hostile.received) == n, "datagrams after the open failed"
        assert host.at("AT+QSSLCLOSE=0") == OK
        alive(host)


# == the modem's own fatal alert behind an online stream a deaf server holds ====================================
@contextlib.contextmanager
def _bad_record_behind_a_held_stream(host, emulator):
    """Transparent mode on id 5, a server that does not read (4 KiB window): the host streams
    until its writes block (flow control) for a second; the server then sends a record under
    a skipped sequence number, and NO CARRIER comes.  Yields (the server, the host's stream)."""
    from tests.e2e import test_adversarial_hostile_servers_2 as h2
    from tests.e2e.test_adversarial_hostile_servers_19 import DeafServer

    go = threading.Event()

    def script(c) -> None:
        c.handshake()
        go.wait(15)
        c.seq_out += 1
        c.sock.sendall(c.seal(CT_APP, b"never to be seen"))
        c.server.stall()

    with DeafServer(script, emulator) as server:
        assert host.at(f'AT+QSSLOPEN=1,1,5,"{h2.NAME}",443,2') == b"\r\nCONNECT\r\n"
        up = stream_bytes(6 << 20)
        written, blocked_since = 0, None
        deadline = time.monotonic() + 12
        while True:
            assert time.monotonic() < deadline, written
            try:
                n = os.write(host.ser.fd, up[written:written + 16384])
                written += n
                host.written += n
                blocked_since = None
            except BlockingIOError:
                blocked_since = blocked_since or time.monotonic()
            if blocked_since and time.monotonic() - blocked_since > 1.0:
                break
            assert written < len(up), "the host's writes never blocked"
        go.set()
        assert host.read_until(b"\r\nNO CARRIER\r\n", timeout=5).endswith(b"\r\nNO CARRIER\r\n")
        yield server, up


def test_bad_record_from_a_deaf_server_while_the_hosts_stream_is_held(ec2x_strict, emulator):
    """Transparent mode, a server that does not read (4 KiB window): the host streams until
    its writes block (flow control).  The server then sends a record under a skipped sequence
    number: NO CARRIER at once, though the link to the server is still full.  When the server
    finally reads, it decrypts -- in order -- an exact prefix of the host's stream, then the
    modem's fatal bad_record_mac under the next sequence number, then the connection's end;
    the port reads the host again and AT+QSSLCLOSE answers."""
    host, advance, port = ec2x_strict
    with _bad_record_behind_a_held_stream(host, emulator) as (server, up):
        conn = server.conns[0]
        server.drain.set()
        wait_for(conn.eof.is_set, 15, "the emulator's end after the backlog")
        received = conn.plaintext()
        assert len(received) > 64 << 10 and up.startswith(received), len(received)
        assert conn.alerts() == [BAD_RECORD_MAC], conn.alerts()
        assert b"never to be seen" not in bytes(host.transcript)
        back_in_command_mode(emulator, port, host)
        assert host.at("AT+QSSLCLOSE=5") == OK


# == ML302: the whole handshake and the data a byte per TCP segment =================================================
def _drip_glue(n, c, data):
    """Hand glue: every write (the first flight, CCS + Finished) a byte per TCP segment."""
    for i in range(len(data)):
        c.sock._sock.sendall(data[i:i + 1])
        if i % 16 == 15:
            time.sleep(0.001)
    return b""


def test_ml302_handshake_and_records_a_byte_per_segment(ml, emulator):
    """ML302 (AES128-SHA): the server's first flight, its CCS + Finished and then 40 records
    (1 .. 976 bytes, a warning user_canceled and an empty record among them) all a byte per
    TCP segment (TCP_NODELAY): the host polls AT meanwhile -- each answered within a second;
    "+QSSLOPEN: <ssid>,0" once; every byte once, in order; the session up; the ssid closes."""
    host, advance, port = ml
    pieces = [pattern(1 + 25 * i, 400 + i) for i in range(40)]
    done = threading.Event()

    def script(c) -> None:
        c.handshake()
        wire = bytearray()
        for i, p in enumerate(pieces):
            wire += c.app(p)
            if i == 10:
                wire += c.tx.seal(CT_ALERT, b"\x01\x5a")
            if i == 20:
                wire += c.tx.seal(CT_APP, b"")
        _drip_glue(2, c, bytes(wire))
        done.set()
        c.echo()
        c.sock.close()                  # (the ML302's close waits for the server's end)

    with Hand(emulator, script, suite=h6.RSA_CBC, glue=_drip_glue) as server:
        mark = len(host.transcript)
        h10.ml_open(host, 3)
        worst = 0.0
        while not done.is_set():
            t0 = time.monotonic()
            assert h10.ml_at(host, "AT") == OK
            worst = max(worst, time.monotonic() - t0)
            time.sleep(0.05)
        assert worst < 1.0, worst
        assert h10.ml_answer(host, 3) == 0
        assert bytes(host.transcript[mark:]).count(b"+QSSLOPEN: 3,") == 1
        want = b"".join(pieces)
        assert h10.ml_read_all(host, 3, len(want)) == want
        assert h10.ml_recv(host, 3) == b""
        assert server.conns[0].alerts == []
        assert h10.ml_state(host, 3) == "CONNECTED"
        h10.ml_close(host, 3)


def test_bad_record_from_a_server_that_never_reads_then_the_hosts_close(ec2x_strict, emulator):
    """As above, but the server never reads again: after NO CARRIER the emulator's fatal alert
    and FIN cannot leave behind the held stream.  AT+QSSLCLOSE then answers OK at once (an
    ended socket: what is left is dropped), the connection is released -- no TCP socket of the
    emulator left to the server -- and the id opens again to a good server."""
    from tests.e2e import test_adversarial_hostile_servers_2 as h2
    from tests.e2e.socket_support import tcp_fds_to

    host, advance, port = ec2x_strict
    with _bad_record_behind_a_held_stream(host, emulator) as (server, _):
        back_in_command_mode(emulator, port, host)
        t0 = time.monotonic()
        assert host.at("AT+QSSLCLOSE=5") == OK
        assert time.monotonic() - t0 < 1.0
        wait_for(lambda: tcp_fds_to(server.port) == 0, 5, "the connection released after the close")
        server.drain.set()
    h2.still_usable(host, emulator, 5)
