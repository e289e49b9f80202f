"""Adversarial review of c18747f (tls_engine/records.py chain_mbedtls_keeps: Certificate entries
Mbed TLS's parser refuses with UNKNOWN_SIG_ALG are dropped before the chain is judged) and 536ca0c
(AT+QIDEACT=<cid> frees the ids of the context's SSL sockets in state 4).

Part 1 is differential, unit level: python-mbedtls (VERIFY_REQUIRED) vs the engine on the same
bytes (tests/e2e/test_review_held_verdict_2.py's mbedtls()/engine()).  Part 2 drives an EC2x / ML302
through the pty."""
from __future__ import annotations

import re
import time

import pytest

from emulator.testing.peers import TlsServer
from tests.e2e.test_review_changes_1205_c import (DONE, alerts_in, certificate, ders_of, rec,
                                                  records_of, server_hello)
from tests.e2e.test_review_held_verdict_2 import (CERT_REQ, _unknown_alg, alert_records, engine, mbedtls)
from tests.e2e.test_ssl_ec2x import MANUAL_HOST, open_example, opened

OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"


# == Part 1: chain_mbedtls_keeps vs python-mbedtls ===================================================
@pytest.fixture(scope="module")
def good(pki):
    return ders_of(pki.issue("hrev2-good", "localhost"))


@pytest.fixture(scope="module")
def other(pki):
    return ders_of(pki.issue("hrev2-other", "other.example"))


@pytest.fixture(scope="module")
def other2(pki):
    return ders_of(pki.issue("hrev2-other2", "other2.example"))


@pytest.fixture(scope="module")
def client_files(pki):
    c = pki.issue("hrev2-client", "modem.example")
    return open(c.chain_path, "rb").read(), open(c.key_path, "rb").read()


RSA_ENC = bytes.fromhex("06092a864886f70d010101")


def _unknown_pk(der: bytes) -> bytes:
    """rsaEncryption in the SubjectPublicKeyInfo replaced by an unknown OID: Mbed TLS's parser
    fails with PK_UNKNOWN_PK_ALG (not skipped by ssl_parse_certificate_chain)."""
    assert der.count(RSA_ENC) == 1
    return der.replace(RSA_ENC, bytes.fromhex("06092a864886f70d01017e"))


def _outer_alg_unknown(der: bytes) -> bytes:
    """Only the outer signatureAlgorithm replaced (the TBS one known): SIG_MISMATCH, not skipped."""
    oid = bytes.fromhex("2a864886f70d01010b")
    at = der.rindex(oid)
    return der[:at] + bytes.fromhex("2a864886f70d01017f") + der[at + len(oid):]


def _flight(chain, tail=DONE):
    return lambda ch: rec(22, server_hello()) + rec(22, certificate(chain) + tail)


def _same(pki, flight, **kw):
    """-> (python-mbedtls err, engine state, ends, engine wire) and asserts they agree."""
    err, mbed_out = mbedtls(pki, flight, **{k: v for k, v in kw.items() if k == "client"})
    ekw = {k: v for k, v in kw.items() if k != "client"}
    if "client" in kw:
        ekw.update(level=2, client_cert_pem=kw["client"][0], client_key_pem=kw["client"][1])
    state, ends, sent = engine(pki, flight, **ekw)
    if err is None:
        assert state == "handshaking" and not ends, (ends, mbed_out.hex())
        assert [p[0] for ct, p in records_of(sent) if ct == 22][:1] == [p[0] for ct, p in records_of(mbed_out)
                                                                          if ct == 22][:1], sent.hex()
    else:
        assert state == "failed" and len(ends) == 1, (hex(err), ends)
        assert alert_records(sent) == alert_records(mbed_out), (hex(err), ends, sent.hex(), mbed_out.hex())
    return err, state, ends, sent


def test_unknown_alg_entries_before_and_between_then_good_leaf(pki, good, other, other2):
    """Two skipped entries, then the leaf for localhost and its intermediates: both connect."""
    flight = _flight([_unknown_alg(other[0]), _unknown_alg(other2[0]), *good])
    err, *_ = _same(pki, flight)
    assert err is None


def test_unknown_alg_between_leaf_and_its_intermediates(pki, good, other):
    """[leaf, skipped entry, rest of the chain]: both connect."""
    flight = _flight([good[0], _unknown_alg(other[0]), *good[1:]])
    err, *_ = _same(pki, flight)
    assert err is None


def test_the_only_entry_for_the_name_has_an_unknown_alg(pki, good, other):
    """[unknown-alg leaf for localhost, leaf for other.example]: Mbed TLS judges other.example
    (name mismatch): both fail with bad_certificate."""
    flight = _flight([_unknown_alg(good[0]), *other])
    err, state, ends, sent = _same(pki, flight)
    assert err == 0x2700 and alerts_in(sent) == [42]


@pytest.mark.parametrize("where", ["after_leaf", "first"])
def test_unknown_alg_ca_copy_in_the_chain(pki, good, where):
    """A copy of the trusted CA re-signed with an unknown algorithm sent as an intermediate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    ca = _unknown_alg(x509.load_pem_x509_certificate(pki.ca.cert_pem).public_bytes(serialization.Encoding.DER))
    chain = [*good, ca] if where == "after_leaf" else [ca, *good]
    err, *_ = _same(pki, _flight(chain))
    assert err is None


@pytest.mark.parametrize("where", ["first", "after_leaf"])
def test_unknown_public_key_alg_is_not_skipped(pki, good, other, where):
    """An entry with an unknown *public key* algorithm: Mbed TLS fails the handshake at the
    Certificate (bad_certificate); the engine must not skip it."""
    bad = _unknown_pk(other[0])
    chain = [bad, *good] if where == "first" else [good[0], bad, *good[1:]]
    err, state, ends, sent = _same(pki, _flight(chain))
    assert err is not None and err != 0x262E


@pytest.mark.parametrize("where", ["first", "after_leaf"])
def test_outer_signature_alg_unknown_only_is_not_skipped(pki, good, other, where):
    bad = _outer_alg_unknown(other[0])
    chain = [bad, *good] if where == "first" else [good[0], bad, *good[1:]]
    err, *_ = _same(pki, _flight(chain))
    assert err is not None


# Was a bug, fixed (tls_engine/records.py chain_mbedtls_keeps keeps a parsed entry's outer SEQUENCE,
# outer_tlv, as Mbed TLS does): a Certificate entry with a byte after its DER SEQUENCE: Mbed TLS
# parsed it and connected, the engine failed verify_failed 'server certificate cannot be parsed'
# (cryptography's strict DER reader), no alert
MALFORMED = ["garbage_first", "garbage_after_leaf", "truncated_unknown_alg_first", "trailing_byte_leaf"]


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_entries_agree_with_mbedtls(pki, good, other, case):
    chain = {"garbage_first": [b"\x30\x03\x02\x01\x00", *good],
             "garbage_after_leaf": [good[0], b"\x30\x03\x02\x01\x00", *good[1:]],
             "truncated_unknown_alg_first": [_unknown_alg(other[0])[:-40], *good],
             "trailing_byte_leaf": [good[0] + b"\x00", *good[1:]]}[case]
    _same(pki, _flight(chain))


def test_seclevel_2_skipped_entry_then_good_leaf_answers_certificate_request(pki, good, other, client_files):
    flight = _flight([_unknown_alg(other[0]), *good], CERT_REQ + DONE)
    err, state, ends, sent = _same(pki, flight, client=client_files)
    assert err is None and [p[0] for ct, p in records_of(sent) if ct == 22][:2] == [11, 16]


@pytest.mark.parametrize("level", [0, 1])
def test_seclevels_skipped_entry_then_good_leaf(pki, good, other, level):
    err, *_ = _same(pki, _flight([_unknown_alg(other[0]), *good]), level=level)
    assert err is None


# == Part 2: AT+QIDEACT frees the ids of ended SSL sockets =============================================
def _state(host, cid):
    return host.at(f"AT+QSSLSTATE={cid}")


def test_freed_id_refuses_send_recv_and_state_lists_nothing(ec2x, net, pki, emulator):
    with TlsServer(pki.server, legacy=True, mode="send_then_close", payload=b"bye") as server:
        net(server, MANUAL_HOST, 8010)
        assert open_example(ec2x, 4) == 0
        ec2x.seen(b'\r\n+QSSLURC: "recv",4\r\n', 10)
        ec2x.seen(b'\r\n+QSSLURC: "closed",4\r\n', 10)
        ec2x.quiet_for(0.3)
        assert ec2x.at("AT+QIDEACT=1") == OK
        assert ec2x.at("AT+QSSLSEND=4,3") == ERROR
        assert ec2x.at("AT+QSSLRECV=4,10") == ERROR
        assert _state(ec2x, 4) == OK
        st = emulator.control("state")
        assert st["ok"] and not [s for s in st["sockets"] if s.get("id", s.get("socket")) == 4], st
        assert ec2x.at("AT+QSSLCLOSE=4") == OK
        assert ec2x.quiet_for(0.5) == b""
    assert ec2x.transcript.count(b'"closed",4') == 1


def test_push_mode_socket_freed_and_reopened(ec2x, net, pki):
    """Access mode 1 (direct push): data and "closed" pushed, then AT+QIDEACT frees the id; the
    same id reopens in push mode and gets only the new connection's data."""
    with TlsServer(pki.server, legacy=True, mode="send_then_close", payload=b"one") as server:
        net(server, MANUAL_HOST, 8010)
        assert ec2x.at(f'AT+QSSLOPEN=1,0,3,"{MANUAL_HOST}",8010,1') == OK
        assert opened(ec2x, 3) == 0
        ec2x.seen(b'+QSSLURC: "recv",3,3\r\none\r\n', 10)
        ec2x.seen(b'+QSSLURC: "closed",3\r\n', 10)
        assert ec2x.at("AT+QIDEACT=1") == OK
        assert ec2x.at("AT+QSSLSTATE") == OK
        assert ec2x.at("AT+QIACT=1") == OK
        assert ec2x.at(f'AT+QSSLOPEN=1,0,3,"{MANUAL_HOST}",8010,1') == OK
        assert opened(ec2x, 3) == 0
        ec2x.seen(b'+QSSLURC: "recv",3,3\r\none\r\n', 10)
        ec2x.seen(b'+QSSLURC: "closed",3\r\n', 10)
        assert ec2x.at("AT+QSSLCLOSE=3") == OK
    assert ec2x.transcript.count(b'+QSSLURC: "recv",3,3') == 2
    assert ec2x.transcript.count(b'+QSSLURC: "closed",3') == 2


def test_opening_socket_when_network_deactivates_then_qideact(ec2x, net, pki, emulator):
    """An open still in its handshake when the network deactivates fails (one +QSSLOPEN answer);
    AT+QIDEACT then the same id opens again."""
    with TlsServer(pki.server, legacy=True, mode="echo") as server:
        net(server, MANUAL_HOST, 8010)
        assert emulator.control("handshake_stall", count=1)["ok"]
        assert ec2x.at(f'AT+QSSLOPEN=1,0,1,"{MANUAL_HOST}",8010') == OK
        time.sleep(0.5)
        assert emulator.control("pdp_deact", cid=1)["ok"]
        assert opened(ec2x, 1) == 570
        ec2x.seen(b'+QIURC: "pdpdeact",1\r\n')
        ec2x.quiet_for(0.3)
        assert ec2x.at("AT+QIDEACT=1") == OK
        assert ec2x.at("AT+QIACT=1") == OK
        assert open_example(ec2x, 1) == 0
        assert ec2x.at("AT+QSSLCLOSE=1") == OK
    assert ec2x.transcript.count(b"+QSSLOPEN: 1,") == 2


def test_two_contexts_only_the_named_one_is_reset(ec2x, net, pki, emulator):
    with TlsServer(pki.server, legacy=True, mode="echo") as server:
        net(server, MANUAL_HOST, 8010)
        assert ec2x.at('AT+QICSGP=2,1,"CMNET","","",1;+QIACT=2') == OK
        assert ec2x.at(f'AT+QSSLOPEN=1,0,0,"{MANUAL_HOST}",8010') == OK
        assert opened(ec2x, 0) == 0
        assert ec2x.at(f'AT+QSSLOPEN=2,0,1,"{MANUAL_HOST}",8010') == OK
        assert opened(ec2x, 1) == 0
        assert emulator.control("pdp_deact", cid=1)["ok"]
        assert emulator.control("pdp_deact", cid=2)["ok"]
        ec2x.seen(b'+QSSLURC: "closed",0\r\n')
        ec2x.seen(b'+QSSLURC: "closed",1\r\n')
        ec2x.quiet_for(0.3)
        assert ec2x.at("AT+QIDEACT=2") == OK
        assert re.search(rb",4,1,0,0,", _state(ec2x, 0))
        assert _state(ec2x, 1) == OK
        assert ec2x.at("AT+QSSLCLOSE=0") == OK


def test_ml302_has_no_qideact(ml302):
    assert ml302.at("AT+QIDEACT=1") == ERROR
    assert ml302.at("AT") == OK


# Was a bug, fixed (SslService.pdp_reset drops the freed id's queued news, as SocketService.close
# does): AT+QIDEACT freed an SSL id but kept its queued URCs: stale +QSSLURC: "recv",2 / "closed",2
# followed the OK of a line that reopened id 2
@pytest.mark.parametrize("ended_by", ["network_pdp_deact", "peer_send_then_close"])
def test_stale_closed_urc_queued_for_a_freed_id_never_reaches_its_next_socket(ec2x, net, pki, emulator, ended_by):
    """The connection on id 2 (buffer mode) ends while the port is busy (a slow AT+QSSLSTATE in a
    chained line): '"closed",2' (and, after a peer's data, '"recv",2') wait in the queue.  The same
    line's AT+QIDEACT=1 frees id 2, AT+QIACT=1 and AT+QSSLOPEN=...,2 open a new socket on it.
    AT+QSSLCLOSE drops such queued news (SocketService.drop_news: they "would read as news of the
    next socket on the id"); after the line's OK the host must not read a '"closed",2' or
    '"recv",2' for the socket it just opened."""
    with TlsServer(pki.server, legacy=True, mode="echo") as server:
        net(server, MANUAL_HOST, 8010)
        assert open_example(ec2x, 2) == 0
        server.wait_handshake()
        assert emulator.control("slow", command="+QSSLSTATE", ms=1500)["ok"]
        ec2x.write(f'AT+QSSLSTATE=2;+QIDEACT=1;+QIACT=1;+QSSLOPEN=1,0,2,"{MANUAL_HOST}",8010\r')
        time.sleep(0.4)
        if ended_by == "network_pdp_deact":
            assert emulator.control("pdp_deact", cid=1)["ok"]
        else:
            server.conn.send(b"old")
            server.conn.close()
        ec2x.read_until(OK, 10)
        assert emulator.control("slow", command="+QSSLSTATE", ms=0)["ok"]
        assert opened(ec2x, 2) == 0
        ec2x.quiet_for(1.0)
        t = bytes(ec2x.transcript)
        after_line = t[t.rindex(b"+QSSLSTATE: 2,"):]
        assert b'+QSSLURC: "closed",2' not in after_line and b'+QSSLURC: "recv",2' not in after_line, after_line
        assert ec2x.send_data(2, b"new") == b"\r\nSEND OK\r\n"
        ec2x.seen(b'+QSSLURC: "recv",2\r\n')
        assert ec2x.at("AT+QSSLRECV=2,100") == b"\r\n+QSSLRECV: 3\r\nnew\r\n" + OK
        assert ec2x.at("AT+QSSLCLOSE=2") == OK


HOST = "220.180.239.212"


def test_transparent_socket_escaped_then_network_deactivates(open_modem, emulator, pki):
    """Access mode 2: CONNECT, "+++" (OK), the network deactivates ("closed"), AT+QIDEACT=1 frees
    the id: ATO has no connection to go back to (NO CARRIER), and the same id opens again in
    transparent mode and echoes."""
    host, _ = open_modem("ec2x")
    with TlsServer(pki.server, mode="echo") as server:
        emulator.router.add_map(HOST, 8011, "127.0.0.1", server.port)
        assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1;S12=5') == OK
        host.write(f'AT+QSSLOPEN=1,1,4,"{HOST}",8011,2\r')
        host.read_until(b"CONNECT\r\n")
        host.write(b"hello")
        assert host.read_exactly(5) == b"hello"
        host.quiet_for(0.15)
        host.write(b"+++")
        host.read_until(OK)
        assert emulator.control("pdp_deact", cid=1)["ok"]
        host.seen(b'+QSSLURC: "closed",4\r\n')
        host.quiet_for(0.3)
        assert re.search(rb",4,1,4,2,", host.at("AT+QSSLSTATE=4"))
        assert host.at("AT+QIDEACT=1") == OK
        assert host.at("AT+QSSLSTATE=4") == OK
        assert host.at("ATO") in (b"\r\nNO CARRIER\r\n", ERROR)
        assert host.at("AT+QIACT=1") == OK
        host.write(f'AT+QSSLOPEN=1,1,4,"{HOST}",8011,2\r')
        host.read_until(b"CONNECT\r\n")
        host.write(b"again")
        assert host.read_exactly(5) == b"again"
        host.quiet_for(0.15)
        host.write(b"+++")
        host.read_until(OK)
        assert host.at("AT+QSSLCLOSE=4") == OK
    assert host.transcript.count(b'"closed",4') == 1


def test_transparent_socket_peer_closed_online_then_qideact(open_modem, emulator, pki):
    """Access mode 2, the peer sends and closes while online: data, NO CARRIER, state 4;
    AT+QIDEACT frees the id; a new transparent open on it works."""
    host, _ = open_modem("ec2x")
    with TlsServer(pki.server, mode="send_then_close", payload=b"bye") as closer, \
            TlsServer(pki.server, mode="echo") as echo:
        emulator.router.add_map(HOST, 8011, "127.0.0.1", closer.port)
        emulator.router.add_map(HOST, 8012, "127.0.0.1", echo.port)
        assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1;S12=5') == OK
        host.write(f'AT+QSSLOPEN=1,1,4,"{HOST}",8011,2\r')
        host.read_until(b"CONNECT\r\n")
        assert host.read_until(b"\r\nNO CARRIER\r\n").startswith(b"bye")
        assert re.search(rb",4,1,4,2,", host.at("AT+QSSLSTATE=4"))
        assert host.at("AT+QIDEACT=1") == OK
        assert host.at("AT+QSSLSTATE") == OK
        assert host.at("AT+QIACT=1") == OK
        host.write(f'AT+QSSLOPEN=1,1,4,"{HOST}",8012,2\r')
        host.read_until(b"CONNECT\r\n")
        host.write(b"ping")
        assert host.read_exactly(4) == b"ping"
        host.quiet_for(0.15)
        host.write(b"+++")
        host.read_until(OK)
        assert host.at("AT+QSSLCLOSE=4") == OK


def test_dtls_socket_freed_by_qideact_and_reopened(open_modem, emulator, pki):
    from emulator.testing.peers.openssl import OpenSslServer
    host, _ = open_modem("ec2x")
    cert, key = pki.server.load_args
    with OpenSslServer(["-cert", cert, "-key", key, "-dtls1_2"]) as server:
        emulator.router.add_map(HOST, 5684, "127.0.0.1", server.port)
        assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
        assert host.at('AT+QSSLCFG="dtls",3,1') == OK
        assert host.at(f'AT+QSSLOPEN=1,3,2,"{HOST}",5684,0') == OK
        host.read_until(b"\r\n+QSSLOPEN: 2,0\r\n")
        assert emulator.control("pdp_deact", cid=1)["ok"]
        host.seen(b'+QSSLURC: "closed",2\r\n')
        host.quiet_for(0.3)
        assert host.at("AT+QIDEACT=1") == OK
        assert host.at("AT+QSSLSTATE=2") == OK
    with OpenSslServer(["-cert", cert, "-key", key, "-dtls1_2"]) as server2:       # (s_server serves one peer)
        emulator.router.add_map(HOST, 5685, "127.0.0.1", server2.port)
        assert host.at("AT+QIACT=1") == OK
        assert host.at(f'AT+QSSLOPEN=1,3,2,"{HOST}",5685,0') == OK
        host.read_until(b"\r\n+QSSLOPEN: 2,0\r\n")
        server2.wait_for_output(rb"CIPHER is")
        assert host.send_data(2, b"dgram") == b"\r\nSEND OK\r\n"
        server2.wait_for_output(rb"dgram")
        assert host.at("AT+QSSLCLOSE=2") == OK
    assert host.transcript.count(b'"closed",2') == 1


def test_trace_of_a_qideact_reset_replays(open_modem, emulator, pki, tmp_path, capsys):
    """Peer close, AT+QIDEACT=1 (the id freed), AT+QIACT=1, the same id reopened: the trace
    replays with no difference."""
    import json
    from emulator.testing.peers import reply_after
    from emulator.tools.trace import replay_main
    path = tmp_path / "qideact.trace"
    host, _ = open_modem("ec2x", trace=str(path))
    with TlsServer(pki.server, handler=lambda conn: conn.sendall(b"bye")) as closer, \
            TlsServer(pki.server, handler=reply_after(4, b"pong")) as second:
        emulator.router.add_map(HOST, 8010, "127.0.0.1", closer.port)
        emulator.router.add_map(HOST, 8011, "127.0.0.1", second.port)
        assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
        assert host.at(f'AT+QSSLOPEN=1,1,2,"{HOST}",8010,0') == OK
        host.read_until(b"\r\n+QSSLOPEN: 2,0\r\n")
        host.read_until(b'\r\n+QSSLURC: "closed",2\r\n')
        assert host.at("AT+QIDEACT=1") == OK
        assert host.at("AT+QSSLRECV=2,100") == ERROR
        assert host.at("AT+QIACT=1") == OK
        assert host.at(f'AT+QSSLOPEN=1,1,2,"{HOST}",8011,0') == OK
        host.read_until(b"\r\n+QSSLOPEN: 2,0\r\n")
        assert host.send_data(2, b"ping") == b"\r\nSEND OK\r\n"
        host.read_until(b'\r\n+QSSLURC: "recv",2\r\n')
        assert host.at("AT+QSSLRECV=2,100") == b"\r\n+QSSLRECV: 4\r\npong\r\n\r\nOK\r\n"
        assert host.at("AT+QSSLCLOSE=2") == OK
    emulator.run(lambda: None)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["code"] for r in records if r["kind"] == "open_result"] == [0, 0]
    capsys.readouterr()
    assert replay_main([str(path)]) == 0, capsys.readouterr().out


@pytest.mark.parametrize("dtls", [True, False], ids=["dtls", "tls"])
def test_real_server_sends_a_skipped_entry_first(pki, tmp_path, dtls):
    """`openssl s_server` (-cert: an entry Mbed TLS's parser skips, UNKNOWN_SIG_ALG; -cert_chain:
    the genuine leaf for the name): the engine (seclevel 1) connects over DTLS as over TLS, as
    Mbed TLS does (it skips the first entry: the unit tests above)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from emulator.testing.peers import OpenSslServer
    from tests.e2e.test_adversarial_dtls_cert_review import _session, drive
    leaf_der = x509.load_pem_x509_certificate(open(pki.server.cert_path, "rb").read()).public_bytes(
        serialization.Encoding.DER)
    skipped = _unknown_alg(leaf_der)      # (s_server's -cert must match -key: the leaf's own copy)

    def pem(der):
        import base64
        b = base64.encodebytes(der).decode().replace("\n", "")
        return "-----BEGIN CERTIFICATE-----\n" + "\n".join(b[i:i + 64] for i in range(0, len(b), 64)) + \
            "\n-----END CERTIFICATE-----\n"
    (tmp_path / "first.pem").write_text(pem(skipped))
    (tmp_path / "chain.pem").write_text(pem(leaf_der))
    args = ["-cert", str(tmp_path / "first.pem"), "-key", str(pki.server.key_path),
            "-cert_chain", str(tmp_path / "chain.pem"), "-cipher", "ALL:@SECLEVEL=0",
            "-dtls1_2" if dtls else "-tls1_2"]
    server = OpenSslServer(args)
    try:
        session, events, sock = drive(_session(pki, dtls=dtls), server.address)
        sock.close()
        assert session.state == "established", events
    finally:
        server.stop()


def test_qsslopen_then_qideact_in_one_line(ec2x, net, pki):
    """AT+QSSLOPEN=...;+QIDEACT=1: the open still connecting when the context goes down fails
    once with 570 (after the line's OK); the id is free again (no 563 after AT+QIACT)."""
    with TlsServer(pki.server, legacy=True, mode="echo") as server:
        net(server, MANUAL_HOST, 8010)
        assert ec2x.at(f'AT+QSSLOPEN=1,0,2,"{MANUAL_HOST}",8010;+QIDEACT=1') == OK
        assert opened(ec2x, 2) == 570
        ec2x.quiet_for(0.5)
        assert ec2x.at("AT+QSSLSTATE=2") == OK
        assert ec2x.at("AT+QIACT=1") == OK
        assert open_example(ec2x, 2) == 0
        assert ec2x.at("AT+QSSLCLOSE=2") == OK
    assert ec2x.transcript.count(b"+QSSLOPEN: 2,") == 2


def test_push_mode_data_held_while_busy_never_reaches_the_next_socket_on_the_id(ec2x, net, pki, emulator):
    """Access mode 1: the peer sends "old" and closes while the port is busy (a slow AT+QSSLSTATE
    in a chained line whose AT+QIDEACT=1 frees the id and whose AT+QSSLOPEN reopens it in push
    mode to another server): the old connection's data never comes as the new socket's push;
    the new socket gets exactly its own "new"."""
    with TlsServer(pki.server, legacy=True, mode="echo") as old, \
            TlsServer(pki.server, legacy=True, mode="send_then_close", payload=b"new") as new:
        net(old, MANUAL_HOST, 8010)
        net(new, MANUAL_HOST, 8011)
        assert ec2x.at(f'AT+QSSLOPEN=1,0,2,"{MANUAL_HOST}",8010,1') == OK
        assert opened(ec2x, 2) == 0
        old.wait_handshake()
        assert emulator.control("slow", command="+QSSLSTATE", ms=1500)["ok"]
        ec2x.write(f'AT+QSSLSTATE=2;+QIDEACT=1;+QIACT=1;+QSSLOPEN=1,0,2,"{MANUAL_HOST}",8011,1\r')
        time.sleep(0.3)
        old.conn.send(b"old")
        old.conn.close()
        ec2x.read_until(OK, 10)
        assert emulator.control("slow", command="+QSSLSTATE", ms=0)["ok"]
        assert opened(ec2x, 2) == 0
        ec2x.seen(b'+QSSLURC: "recv",2,3\r\nnew\r\n', 10)
        ec2x.seen(b'+QSSLURC: "closed",2\r\n', 10)
        ec2x.quiet_for(0.5)
        assert ec2x.at("AT+QSSLCLOSE=2") == OK
    t = bytes(ec2x.transcript)
    assert b"old" not in t[t.rindex(b"+QSSLSTATE: 2,"):], t
