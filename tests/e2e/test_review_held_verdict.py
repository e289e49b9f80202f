"""Adversarial review of 24082c5 (tls_engine/session.py `_hold_verdict`, `_judge_certificate`,
`_step_state`, `_certificate_less`): at seclevel >= 1 a bad verdict of the sniffer on the
server's Certificate waits until Mbed TLS (verify OPTIONAL underneath) has taken that message.

Covered here:

* security: a chain for another name never gets the modem's next flight (ClientKeyExchange,
  its Certificate / CertificateVerify at seclevel 2) nor an established session, whatever the
  TCP reads look like (one byte per receive(), odd sizes, Certificate and ServerHelloDone in
  different reads, the owner calling outgoing() between receives or not), against a real
  OpenSSL server in memory and hand-made records;
* fidelity: the failure kind and the alert the server receives are python-mbedtls's
  (VERIFY_REQUIRED) on the same bytes, or seclevel 0's where python-mbedtls cannot be run the
  same way (resumption: it has no session API);
* resumption: a server that accepts the offered session (echoes its id) and then sends a
  Certificate anyway -- Mbed TLS jumped from SERVER_HELLO to SERVER_CHANGE_CIPHER_SPEC without
  ever taking a Certificate;
* performance: for a good chain the held-verdict machinery makes no native call at all
  (counted, not timed);
* through the pty: EC2x (566, AT+QSSLSTATE, AT+QIGETERROR) and ML302 (-1), no hang;
* DTLS: no verdict is ever held (every Certificate checked, the one used judged at the end).

Bugs found (strict xfails then, all fixed since: their tests say "Was a bug, fixed"): a Certificate after a ServerHello that resumed is judged (ssl->state
jumped to SERVER_CHANGE_CIPHER_SPEC, 12 > 3, without taking it): verify_failed + bad_certificate
instead of Mbed TLS's unexpected_message (unit and EC2x); a malformed list held as
protocol_error on which Mbed TLS fails with an X.509 error at step 3 loses Mbed TLS's
bad_certificate alert (the server gets none; unit and EC2x); a handshake refused at its
Certificate writes a key-log line (Mbed TLS derived the keys of the flight that is dropped).
"""
from __future__ import annotations

import re
import ssl

import pytest

from emulator.testing.peers.memory import MemoryTlsServer
from tests.e2e.test_review_changes_1205_c import (DONE, RSA_GCM, alerts_in, certificate,
                                                  client_hello_session_id, ders_of, rec, records_of,
                                                  server_hello)
from tls_engine import SessionCache, TlsClientSession, TlsFailure, TlsSettings
from tls_engine import session as session_module
from tls_engine.errors import HandshakeComplete

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"), pytest.mark.needs_native]

OK = b"\r\nOK\r\n"
ECDHE_RSA_GCM = 0xC02F    # TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 (what Python's OpenSSL server takes)


# == helpers =======================================================================================
def MemoryServer(leaf, client_ca: str | None = None) -> MemoryTlsServer:
    """An OpenSSL TLS 1.2 server over memory BIOs (optionally asking for a client certificate)."""
    return MemoryTlsServer(leaf, minimum=ssl.TLSVersion.TLSv1_2, client_ca=client_ca)


def settings(pki, **kw) -> TlsSettings:
    values = dict(server_name="localhost", seclevel=1, ca_pem=pki.ca.cert_pem, ca_label="RAM:cacert.pem")
    values.update(kw)
    return TlsSettings(**values)


def chunks(data: bytes, sizes) -> list[bytes]:
    """data cut into pieces of the sizes given (cycled)."""
    out, at, i = [], 0, 0
    sizes = list(sizes)
    while at < len(data):
        n = sizes[i % len(sizes)]
        out.append(data[at:at + n])
        at += n
        i += 1
    return out


def ends_of(session) -> list:
    return [e for e in session.events() if isinstance(e, (TlsFailure, HandshakeComplete))]


def drive(session, server, cut=lambda b: [b], poll_between=True, rounds=20):
    """The session against `server`, the server's bytes handed over in the pieces cut() makes;
    outgoing() read after every receive() (poll_between) or only once the pieces are in.
    -> everything the session sent after its ClientHello."""
    session.start()
    hello = b"".join(session.outgoing())
    sent = b""
    answer = server.take(hello)
    for _ in range(rounds):
        if not answer or session.state != "handshaking":
            break
        out = b""
        for piece in cut(answer):
            session.receive(piece)
            if poll_between:
                out += b"".join(session.outgoing())
            if session.state != "handshaking":
                break
        out += b"".join(session.outgoing())
        sent += out
        if session.state != "handshaking":
            break
        answer = server.take(out)
    sent += b"".join(session.outgoing())
    return sent


CUTS = {
    "one_read": lambda b: [b],
    "one_byte_reads": lambda b: chunks(b, [1]),
    "odd_reads": lambda b: chunks(b, [7, 1, 13, 2, 331, 5]),
    "record_per_read": lambda b: [rec_ for rec_ in _split_records(b)],
    "header_then_body": lambda b: [p for r in _split_records(b) for p in (r[:5], r[5:])],
}


def _split_records(wire: bytes) -> list[bytes]:
    out, at = [], 0
    while at < len(wire):
        n = int.from_bytes(wire[at + 3:at + 5], "big")
        out.append(wire[at:at + 5 + n])
        at += 5 + n
    return out


@pytest.fixture(scope="module")
def other_leaf(pki):
    return pki.issue("revhold-other", "other.example")


@pytest.fixture(scope="module")
def good_leaf(pki):
    return pki.issue("revhold-good", "localhost")


# == (1) security: a bad chain never gets the next flight ==========================================
@pytest.mark.parametrize("poll_between", [True, False], ids=["outgoing_between", "outgoing_at_end"])
@pytest.mark.parametrize("cut", list(CUTS), ids=list(CUTS))
def test_a_bad_chain_from_openssl_gets_no_next_flight_however_it_arrives(pki, other_leaf, cut, poll_between):
    """OpenSSL's real first flight (ServerHello, Certificate for other.example, ServerHelloDone),
    however the TCP reads cut it: the modem sends nothing but one bad_certificate alert, fails
    as a failed check, and OpenSSL never sees a ClientKeyExchange."""
    server = MemoryServer(other_leaf)
    session = TlsClientSession(settings(pki))
    sent = drive(session, server, CUTS[cut], poll_between)
    ends = ends_of(session)
    assert session.state == "failed" and len(ends) == 1, (session.state, ends)
    assert ends[0].kind == "verify_failed" and "other.example" in ends[0].reason, ends
    assert [ct for ct, _ in records_of(sent)] == [21] and alerts_in(sent) == [42], sent.hex()
    assert not server.done


@pytest.mark.parametrize("cut", list(CUTS), ids=list(CUTS))
def test_a_good_chain_however_it_arrives_completes(pki, good_leaf, cut):
    """The control: the same cuts with a chain for localhost end in an established session."""
    server = MemoryServer(good_leaf)
    session = TlsClientSession(settings(pki))
    drive(session, server, CUTS[cut])
    ends = ends_of(session)
    assert session.state == "established" and isinstance(ends[-1], HandshakeComplete), ends
    assert server.done


def test_seclevel_2_sends_neither_certificate_nor_verify_for_a_bad_chain(pki, other_leaf):
    """seclevel 2, OpenSSL asking for the client certificate (CertificateRequest in the same
    flight): for a chain for another name the modem's Certificate / ClientKeyExchange /
    CertificateVerify never leave, one byte at a time or in one read."""
    client = pki.issue("revhold-client", "modem.example")
    for cut in ("one_read", "one_byte_reads", "record_per_read"):
        server = MemoryServer(other_leaf, client_ca=pki.ca.cert_pem.decode())
        session = TlsClientSession(settings(pki, seclevel=2, client_cert_pem=open(client.chain_path, "rb").read(),
                                            client_key_pem=open(client.key_path, "rb").read()))
        sent = drive(session, server, CUTS[cut])
        ends = ends_of(session)
        assert session.state == "failed" and ends and ends[0].kind == "verify_failed", (cut, ends)
        assert [ct for ct, _ in records_of(sent)] == [21] and alerts_in(sent) == [42], (cut, sent.hex())


def test_seclevel_2_good_chain_sends_its_certificate(pki, good_leaf):
    """The control for the one above: OpenSSL's CertificateRequest is answered, the handshake ends."""
    client = pki.issue("revhold-client2", "modem.example")
    server = MemoryServer(good_leaf, client_ca=pki.ca.cert_pem.decode())
    session = TlsClientSession(settings(pki, seclevel=2, client_cert_pem=open(client.chain_path, "rb").read(),
                                        client_key_pem=open(client.key_path, "rb").read()))
    drive(session, server, CUTS["one_byte_reads"])
    assert session.state == "established" and server.done and server.obj.getpeercert(binary_form=True)


# == (4) performance: nothing native per step when nothing is held =================================
def test_a_good_chain_makes_no_handshake_state_reads(pki, good_leaf, monkeypatch):
    """A good chain, one byte per receive(): _handshake_state is never called, no NativeSsl is
    made for it, ssl->state is never read (counted, not timed)."""
    from tls_engine import native

    calls = {"state": 0, "native_state": 0, "judge": 0}
    real_state = session_module.TlsClientSession._handshake_state
    real_native = native.NativeSsl.handshake_state
    real_judge = session_module.TlsClientSession._judge_certificate

    def count(key, real):
        def wrapped(*a, **kw):
            calls[key] += 1
            return real(*a, **kw)
        return wrapped

    monkeypatch.setattr(session_module.TlsClientSession, "_handshake_state", count("state", real_state))
    monkeypatch.setattr(native.NativeSsl, "handshake_state", count("native_state", real_native))
    monkeypatch.setattr(session_module.TlsClientSession, "_judge_certificate", count("judge", real_judge))
    for cut in ("one_read", "one_byte_reads"):
        server = MemoryServer(good_leaf)
        session = TlsClientSession(settings(pki))
        drive(session, server, CUTS[cut])
        assert session.state == "established", ends_of(session)
        assert session._state_ssl is None
    assert calls == {"state": 0, "native_state": 0, "judge": 0}, calls


def test_a_bad_chain_reads_the_state_only_while_held(pki, other_leaf, monkeypatch):
    """The counter works: a bad chain in one read does read the state (a handful of times, not
    per byte received before the Certificate)."""
    calls = {"state": 0}
    real_state = session_module.TlsClientSession._handshake_state

    def wrapped(self):
        calls["state"] += 1
        return real_state(self)

    monkeypatch.setattr(session_module.TlsClientSession, "_handshake_state", wrapped)
    server = MemoryServer(other_leaf)
    session = TlsClientSession(settings(pki))
    drive(session, server, CUTS["one_read"])
    assert session.state == "failed"
    assert 1 <= calls["state"] <= 20, calls


# == resumption: a Certificate after a ServerHello that resumed ===================================
def _resumed_then_certificate(pki, level: int, good_leaf, bad: list[bytes], split: bool):
    """A full handshake with OpenSSL (chain for localhost) fills the cache; the next open
    offers that session, and a hand-made server accepts it (echoes the session id, same suite)
    and then sends a Certificate for another name and a ServerHelloDone instead of its
    ChangeCipherSpec.  -> (state, ends, bytes sent after the second ClientHello)."""
    cache, key = SessionCache(), ("revhold", level)
    kw = dict(seclevel=level, cipher_suites=(ECDHE_RSA_GCM,))
    first = TlsClientSession(settings(pki, **kw), cache, key)
    drive(first, MemoryServer(good_leaf))
    assert first.state == "established" and key in cache, ends_of(first)
    second = TlsClientSession(settings(pki, **kw), cache, key)
    second.start()
    hello = b"".join(second.outgoing())
    sid = client_hello_session_id(hello)
    assert sid, "the second ClientHello offers the session"
    pieces = [rec(22, server_hello(sid=sid, suite=ECDHE_RSA_GCM)), rec(22, certificate(bad) + DONE)]
    sent = b""
    for piece in (pieces if split else [b"".join(pieces)]):
        second.receive(piece)
        sent += b"".join(second.outgoing())
    return second.state, ends_of(second), sent


@pytest.mark.parametrize("split", [False, True], ids=["one_read", "hello_then_certificate"])
def test_seclevel_0_a_certificate_after_a_resuming_hello_is_an_unexpected_message(pki, good_leaf, other_leaf,
                                                                                   split):
    """The reference (seclevel 0, no sniffer verdict): Mbed TLS, resuming, wants the server's
    ChangeCipherSpec and refuses the Certificate: unexpected_message (10), handshake_failed."""
    state, ends, sent = _resumed_then_certificate(pki, 0, good_leaf, ders_of(other_leaf), split)
    assert state == "failed" and ends and ends[0].kind == "handshake_failed", ends
    assert alerts_in(sent) == [10], sent.hex()


# Was a bug, fixed (the held verdict applies only once a step began at SERVER_CERTIFICATE and Mbed
# TLS moved past it -- a resumed handshake never takes one; no step runs after that (no key
# exchange, no key log); a malformed list Mbed TLS fails on at that step keeps Mbed TLS's alert:
# tls_engine/session.py _cert_step_seen): a Certificate after a resuming ServerHello (Mbed TLS at
# SERVER_CHANGE_CIPHER_SPEC, never took it) is judged: verify_failed + bad_certificate instead of
# Mbed TLS's unexpected_message
@pytest.mark.parametrize("split", [False, True], ids=["one_read", "hello_then_certificate"])
def test_seclevel_1_a_certificate_after_a_resuming_hello_fails_as_seclevel_0(pki, good_leaf, other_leaf, split):
    """docs/behaviour.md: a bad verdict stops the handshake "as soon as Mbed TLS has taken that
    message"; Mbed TLS failing before it takes the Certificate is the open's failure, with its
    reason and alert, as at seclevel 0.  A resumed handshake never takes a Certificate (ssl->state
    jumps from SERVER_HELLO to SERVER_CHANGE_CIPHER_SPEC, 12 > 3): the same failure as seclevel 0."""
    state, ends, sent = _resumed_then_certificate(pki, 1, good_leaf, ders_of(other_leaf), split)
    assert state == "failed" and ends and ends[0].kind == "handshake_failed", ends
    assert alerts_in(sent) == [10], sent.hex()


def test_a_resumed_session_still_completes_at_seclevel_1(pki, good_leaf):
    """The control: the same cache, a real OpenSSL server resuming: established, resumed."""
    cache, key = SessionCache(), ("revhold-ok", 1)
    kw = dict(cipher_suites=(ECDHE_RSA_GCM,))
    first = TlsClientSession(settings(pki, **kw), cache, key)
    server = MemoryServer(good_leaf)
    drive(first, server)
    assert first.state == "established"
    session = server.obj.session
    server2 = MemoryServer(good_leaf)
    server2.obj = server.obj.context.wrap_bio(server2.incoming, server2.outgoing, server_side=True)
    second = TlsClientSession(settings(pki, **kw), cache, key)
    drive(second, server2)
    ends = ends_of(second)
    assert second.state == "established" and ends[-1].resumed, (ends, session)


# == (3) through the pty ===========================================================================
PTY_NAME = "otherhold.example"         # routed to the server, whose certificate is for other names


def _dribbled_flight(wait_for_alert: bool, suite: int | None = None):
    """A hand-made server (test_adversarial_hostile_servers_7.Flight: certificate for the shared
    PKI's server names): its ServerHello, then the Certificate one byte per TCP segment, then
    -- wait_for_alert: only once the modem has answered the Certificate (the verdict must not
    wait for ServerHelloDone) -- the ServerHelloDone, also a byte at a time; then it records what
    the modem sends until it closes."""
    from tests.e2e import test_adversarial_hostile_servers_7 as h7

    def script(c) -> None:
        f = h7.Flight(c)
        sh = f.sh if suite is None else f.sh[:39] + suite.to_bytes(2, "big") + f.sh[41:]
        c.sock.sendall(h7.record(h7.CT_HANDSHAKE, sh))
        h7.send_bytewise(c.sock, h7.record(h7.CT_HANDSHAKE, f.cert))
        first = []
        if wait_for_alert:
            try:
                first.append(c.read_record())
            except (OSError, EOFError):
                pass
        try:
            h7.send_bytewise(c.sock, h7.record(h7.CT_HANDSHAKE, f.done))
        except OSError:
            pass
        h7.hold(c)
        c.everything = first + c.after       # (set last: the test waits for it)
    return script


@pytest.mark.parametrize("wait_for_alert", [False, True], ids=["done_follows", "done_after_the_alert"])
def test_ec2x_a_dribbled_bad_chain_fails_566_with_one_alert(ec2x_strict, emulator, caplog, wait_for_alert):
    """EC2x seclevel 1, a certificate for other names arriving a byte at a time: +QSSLOPEN 566,
    AT+QIGETERROR 566, AT+QSSLSTATE empty; the server gets exactly one bad_certificate alert and
    no ClientKeyExchange; the modem never waits for the ServerHelloDone to judge."""
    from tests.e2e import test_adversarial_hostile_servers_2 as h2
    from tests.e2e import test_adversarial_hostile_servers_7 as h7
    from tests.e2e.hostile_support import open_answer
    from tests.e2e.socket_support import wait_for
    from emulator.testing.peers.pki import default_pki
    host, advance, port = ec2x_strict
    assert host.upload(h7.CA_FILE, default_pki().ca.cert_pem).endswith(OK)
    for line in ('"ciphersuite",1,0X009C', f'"cacert",1,"{h7.CA_FILE}"', '"seclevel",1,1', '"negotiatetime",1,300'):
        assert host.at(f"AT+QSSLCFG={line}") == OK
    script = _dribbled_flight(wait_for_alert)
    with h7.Server(emulator, script) as server:
        emulator.router.add_map(PTY_NAME, 443, "127.0.0.1", server.port)
        mark = len(caplog.records)
        assert host.at(f'AT+QSSLOPEN=1,1,2,"{PTY_NAME}",443,0') == OK
        assert open_answer(host, 2, timeout=60) == 566
        assert h2.qigeterror(host) == 566
        assert host.at("AT+QSSLSTATE") == OK
        wait_for(lambda: server.conns and hasattr(server.conns[0], "everything"), 30, "the connection ended")
        after = server.conns[0].everything
    assert after == [(21, b"\x02\x2a")], after
    reasons = [r.getMessage() for r in caplog.records[mark:] if r.getMessage().startswith("SSL open 2 ")]
    assert len(reasons) == 1 and "does not match" in reasons[0], reasons
    assert host.transcript.count(b"+QSSLOPEN: 2,") == 1
    assert host.at("AT") == OK


def test_ml302_a_dribbled_bad_chain_fails_minus_1_with_one_alert(ml302_strict, emulator, caplog):
    """ML302 seclevel 1 (CA in slot 0), the same dribbled flight: +QSSLOPEN: 3,-1 once, the
    socket CLOSED in AT+QSSLSTATE, one bad_certificate alert on the wire, nothing else."""
    from tests.e2e import test_adversarial_hostile_servers_2 as h2
    from tests.e2e import test_adversarial_hostile_servers_7 as h7
    from tests.e2e.answer_support import collect
    from tests.e2e.socket_support import wait_for
    host, advance, port = ml302_strict
    h2._ml302_secwrite(host, 0, h2.default_pki().ca.cert_pem)
    assert host.at('AT+QSSLCFG="seclevel",0,1') == OK
    with h7.Server(emulator, _dribbled_flight(True, suite=0x002F)) as server:   # (TLS_RSA_WITH_AES_128_CBC_SHA)
        emulator.router.add_map(PTY_NAME, 443, "127.0.0.1", server.port)
        mark = len(caplog.records)
        assert host.at(f'AT+QSSLOPEN=3,0,"{PTY_NAME}",443,0') == OK
        assert collect(host, lambda got: b"+QSSLOPEN" in got, timeout=60) == b"\r\n+QSSLOPEN: 3,-1\r\n"
        wait_for(lambda: server.conns and hasattr(server.conns[0], "everything"), 30, "the connection ended")
        after = server.conns[0].everything
        state = host.at("AT+QSSLSTATE")
    assert after == [(21, b"\x02\x2a")], after
    assert re.search(rb'\+QSSLSTATE: 3,[^\r]*CLOSED', state), state
    reasons = [r.getMessage() for r in caplog.records[mark:] if r.getMessage().startswith("SSL open 3 ")]
    assert len(reasons) == 1 and "does not match" in reasons[0], reasons
    assert host.transcript.count(b"+QSSLOPEN: 3,") == 1


# == (2) fidelity: hand-made Certificates, against python-mbedtls VERIFY_REQUIRED and seclevel 0 ===
def _entry(der: bytes) -> bytes:
    return len(der).to_bytes(3, "big") + der


def _raw_certificate(entries: bytes) -> bytes:
    """A Certificate message of these raw entries (the list length right)."""
    from tests.e2e.test_review_changes_1205_c import hs
    return hs(11, len(entries).to_bytes(3, "big") + entries)


GARBAGE_DER = b"\x30\x81\xc8" + b"\x01" * 200      # a SEQUENCE of 200 bytes that is no certificate


def _run_level(pki, level: int, flight, cut=lambda b: [b]):
    """The engine (seclevel `level`, suite RSA_GCM only, dialling localhost) fed flight(ClientHello)
    in the pieces cut() makes. -> (state, ends, bytes sent after the ClientHello)."""
    kw = dict(cipher_suites=(RSA_GCM,), seclevel=level)
    if level == 0:
        kw.update(ca_pem=None, ca_label="")
    session = TlsClientSession(settings(pki, **kw))
    session.start()
    hello = b"".join(session.outgoing())
    sent = b""
    for piece in cut(flight(hello)):
        session.receive(piece)
        sent += b"".join(session.outgoing())
        if session.state != "handshaking":
            break
    return session.state, ends_of(session), sent


def _mbedtls(pki, flight):
    from tests.e2e.test_review_changes_1205_c import mbedtls_run
    return mbedtls_run(pki, flight)


def _flight_of(cert_msg: bytes):
    return lambda ch: rec(22, server_hello()) + rec(22, cert_msg + DONE)


@pytest.mark.parametrize("cut", ["one_read", "one_byte_reads", "record_per_read"])
@pytest.mark.parametrize("case", ["other_name", "garbage_after_other", "truncated_leaf", "foreign_ca"])
def test_a_bad_chain_fails_with_mbedtls_alert(pki, other_leaf, case, cut):
    """Chains Mbed TLS takes and refuses (VERIFY_REQUIRED: -0x2700 or an X.509 error at the
    Certificate): the engine fails -- verify_failed for a chain Mbed TLS parsed and walked,
    Mbed TLS's own failure (handshake_failed, its X.509 parse error) for an entry it cannot
    parse (since test_review_held_verdict_2: an X.509 parse error is Mbed TLS's, alert and
    all) -- sending the alert python-mbedtls sends and no handshake record, however the bytes
    are cut."""
    import trustme
    from cryptography import x509 as cx
    from cryptography.hazmat.primitives import serialization
    other = ders_of(other_leaf)
    foreign = cx.load_pem_x509_certificate(trustme.CA().issue_cert("localhost").cert_chain_pems[0].bytes())
    chains = {"other_name": other, "garbage_after_other": other[:1] + [GARBAGE_DER],
              "truncated_leaf": [other[0][:-10]],
              "foreign_ca": [foreign.public_bytes(serialization.Encoding.DER)]}
    flight = _flight_of(certificate(chains[case]))
    err, mbed_out = _mbedtls(pki, flight)
    assert err is not None and 0x2080 <= err <= 0x3000, hex(err or 0)
    state, ends, sent = _run_level(pki, 1, flight, CUTS[cut])
    kind = "verify_failed" if err == 0x2700 else "handshake_failed"
    assert state == "failed" and len(ends) == 1 and ends[0].kind == kind, (hex(err), ends)
    assert [ct for ct, _ in records_of(sent)] == [21], sent.hex()
    assert alerts_in(sent) == alerts_in(mbed_out), (sent.hex(), mbed_out.hex())


@pytest.mark.parametrize("case", ["good_then_truncated", "other_then_truncated", "list_too_long"])
def test_a_malformed_list_mbedtls_refuses_as_decode_error_fails_as_at_seclevel_0(pki, good_leaf, other_leaf, case):
    """A list the sniffer cannot read and Mbed TLS refuses before any X.509 parsing error
    (decode_error, -0x7A00): protocol_error with the sniffer's reason and Mbed TLS's
    decode_error alert, at seclevel 1 as at seclevel 0 and as python-mbedtls."""
    good, other = ders_of(good_leaf), ders_of(other_leaf)
    raw = {"good_then_truncated": _entry(good[0]) + b"\x00\x10\x00" + b"\x30" * 10,
           "other_then_truncated": _entry(other[0]) + b"\x00\x10\x00" + b"\x30" * 10}
    if case == "list_too_long":
        from tests.e2e.test_review_changes_1205_c import hs
        entries = _entry(other[0])
        msg = hs(11, (len(entries) + 5).to_bytes(3, "big") + entries)
    else:
        msg = _raw_certificate(raw[case])
    flight = _flight_of(msg)
    err, mbed_out = _mbedtls(pki, flight)
    assert err == 0x7A00 and alerts_in(mbed_out) == [50], (hex(err or 0), mbed_out.hex())
    seen = [_run_level(pki, level, flight) for level in (0, 1)]
    for state, ends, sent in seen:
        assert state == "failed" and len(ends) == 1 and ends[0].kind == "protocol_error", ends
        assert "malformed server Certificate message" in ends[0].reason, ends
        assert alerts_in(sent) == [50] and [ct for ct, _ in records_of(sent)] == [21], sent.hex()


# Was a bug, fixed (the held verdict applies only once a step began at SERVER_CERTIFICATE and Mbed
# TLS moved past it -- a resumed handshake never takes one; no step runs after that (no key
# exchange, no key log); a malformed list Mbed TLS fails on at that step keeps Mbed TLS's alert:
# tls_engine/session.py _cert_step_seen): a malformed Certificate list (held as protocol_error, no
# alert) on which Mbed TLS fails with an X.509 error at step 3 is judged 'past': Mbed TLS's
# bad_certificate alert is dropped, the server gets no alert
@pytest.mark.parametrize("cut", ["one_read", "one_byte_reads"])
def test_a_malformed_list_with_an_unparsable_first_entry_sends_mbedtls_alert(pki, cut):
    """The first entry garbage DER (Mbed TLS parses entries as it walks the list: X.509 error
    -0x21E2, bad_certificate), the second one truncated (the sniffer, which reads the list
    first, says malformed): seclevel 0 fails protocol_error with Mbed TLS's bad_certificate
    alert, python-mbedtls (VERIFY_REQUIRED) sends bad_certificate too -- so must seclevel 1."""
    flight = _flight_of(_raw_certificate(_entry(GARBAGE_DER) + b"\x00\x10\x00" + b"\x30" * 10))
    err, mbed_out = _mbedtls(pki, flight)
    assert err == 0x21E2 and alerts_in(mbed_out) == [42], (hex(err or 0), mbed_out.hex())
    state0, ends0, sent0 = _run_level(pki, 0, flight, CUTS[cut])
    assert ends0 and ends0[0].kind == "protocol_error" and alerts_in(sent0) == [42], (ends0, sent0.hex())
    state1, ends1, sent1 = _run_level(pki, 1, flight, CUTS[cut])
    assert state1 == "failed" and len(ends1) == 1 and ends1[0].kind == "protocol_error", ends1
    assert alerts_in(sent1) == [42] and [ct for ct, _ in records_of(sent1)] == [21], sent1.hex()


def _resume_then_certificate_server(emulator, other_der: bytes):
    """test_adversarial_hostile_servers_6.HandServer: connection 1 a good full handshake (session
    id issued) and an echo; connection 2 accepts the session the ClientHello offers (echoes its
    id, same suite) and sends a Certificate for other.example + ServerHelloDone instead of its
    ChangeCipherSpec, then records what the modem sends."""
    from tests.e2e import test_adversarial_hostile_servers_6 as h6
    from tests.e2e import test_adversarial_hostile_servers_7 as h7
    count = []

    def script(c) -> None:
        count.append(c)
        if len(count) == 1:
            c.handshake()
            c.echo()
            return
        body = c.read_handshake()
        assert body[0] == 1
        hello = h6.ClientHello(body[4:])
        c.offered = hello.session_id
        exts = h6.ext(h6.EXT_RENEG, b"\x00")
        sh = h6.hs(2, b"\x03\x03" + __import__("os").urandom(32) + bytes([len(hello.session_id)]) + hello.session_id
                   + h6.RSA_GCM.to_bytes(2, "big") + b"\x00" + len(exts).to_bytes(2, "big") + exts)
        c.sock.sendall(h6.record(h6.CT_HANDSHAKE, sh) + h6.record(h6.CT_HANDSHAKE, sh[:0] + h6.hs(11, h7.certificate_body(
            [other_der]))) + h6.record(h6.CT_HANDSHAKE, h6.hs(14, b"")))
        h7.hold(c)
        c.ended = True
    name = "www.iottest.work"            # (a name the shared PKI's server certificate is for)
    return h6.HandServer(emulator, script, name=name), name


# Was a bug, fixed (the held verdict applies only once a step began at SERVER_CERTIFICATE and Mbed
# TLS moved past it -- a resumed handshake never takes one; no step runs after that (no key
# exchange, no key log); a malformed list Mbed TLS fails on at that step keeps Mbed TLS's alert:
# tls_engine/session.py _cert_step_seen): EC2x seclevel 1: a Certificate after a resuming
# ServerHello is judged (bad_certificate alert, 'does not match' reason) where seclevel 0 fails as
# Mbed TLS (unexpected_message)
def test_ec2x_a_certificate_after_a_resuming_hello_fails_as_at_seclevel_0(ec2x_strict, emulator, caplog, other_leaf):
    """EC2x session_cache 1 (default): open 1 a good full handshake, closed; open 2 to the same
    host:port offers the session, the server accepts it and then sends a Certificate for another
    name.  Both seclevels answer 566; what the server receives and the reason must be the same
    (docs/behaviour.md: a failure of Mbed TLS before it takes the Certificate is the open's,
    as at seclevel 0)."""
    from tests.e2e import test_adversarial_hostile_servers_2 as h2
    from tests.e2e import test_adversarial_hostile_servers_7 as h7
    from tests.e2e.hostile_support import open_answer
    from tests.e2e.socket_support import wait_for
    from emulator.testing.peers.pki import default_pki
    host, advance, port = ec2x_strict
    assert host.upload(h7.CA_FILE, default_pki().ca.cert_pem).endswith(OK)
    seen = []
    for level in (0, 1):
        for line in ('"ciphersuite",1,0X009C', f'"cacert",1,"{h7.CA_FILE}"', f'"seclevel",1,{level}'):
            assert host.at(f"AT+QSSLCFG={line}") == OK
        server, name = _resume_then_certificate_server(emulator, ders_of(other_leaf)[0])
        with server:
            assert host.at(f'AT+QSSLOPEN=1,1,2,"{name}",443,0') == OK
            assert open_answer(host, 2, timeout=60) == 0
            assert host.at("AT+QSSLCLOSE=2,0") == OK
            mark = len(caplog.records)
            assert host.at(f'AT+QSSLOPEN=1,1,2,"{name}",443,0') == OK
            assert open_answer(host, 2, timeout=60) == 566
            assert h2.qigeterror(host) == 566
            wait_for(lambda: len(server.conns) > 1 and hasattr(server.conns[1], "ended"), 30, "the connection ended")
            second = server.conns[1]
            assert second.offered and second.offered in server.sessions, "the session was offered"
            reasons = [r.getMessage().split("): ", 1)[-1] for r in caplog.records[mark:]
                       if r.getMessage().startswith("SSL open 2 ")]
            seen.append((reasons, second.after))
    assert seen[0][1] == [(21, b"\x02\x0a")], seen                       # seclevel 0: unexpected_message
    assert seen[1] == seen[0], seen


# == side effects of letting Mbed TLS run past a bad Certificate ====================================
# Was a bug, fixed (the held verdict applies only once a step began at SERVER_CERTIFICATE and Mbed
# TLS moved past it -- a resumed handshake never takes one; no step runs after that (no key
# exchange, no key log); a malformed list Mbed TLS fails on at that step keeps Mbed TLS's alert:
# tls_engine/session.py _cert_step_seen): a handshake refused at the Certificate now writes a
# CLIENT_RANDOM key-log line (Mbed TLS derived the keys of the dropped next flight)
def test_a_refused_certificate_writes_no_key_log_line(pki, other_leaf, good_leaf):
    """docs/behaviour.md: the key log has one NSS line per full handshake, identical to the
    server's own key log for that session.  A chain refused at its Certificate never gets a
    ClientKeyExchange out (Mbed TLS VERIFY_REQUIRED derives no keys): no line, no session on the
    server's side to match it.  (The control: a good chain writes exactly one.)"""
    good_lines: list[str] = []
    session = TlsClientSession(settings(pki, keylog=good_lines.append))
    drive(session, MemoryServer(good_leaf))
    assert session.state == "established" and len(good_lines) == 1
    lines: list[str] = []
    server = MemoryServer(other_leaf)
    session = TlsClientSession(settings(pki, keylog=lines.append))
    sent = drive(session, server)
    assert session.state == "failed" and alerts_in(sent) == [42]
    assert lines == [], lines


def test_without_the_state_reader_a_bad_chain_fails_at_once(pki, other_leaf, monkeypatch):
    """No native layer to read ssl->state: the verdict is applied when the Certificate is read
    (docs: "Without the native layer ... the open fails at once"): nothing but the alert leaves,
    Mbed TLS is not stepped past the ClientHello."""
    monkeypatch.setattr(session_module.TlsClientSession, "_handshake_state", lambda self: None)
    for cut in ("one_read", "one_byte_reads"):
        server = MemoryServer(other_leaf)
        session = TlsClientSession(settings(pki))
        sent = drive(session, server, CUTS[cut])
        ends = ends_of(session)
        assert session.state == "failed" and len(ends) == 1 and ends[0].kind == "verify_failed", ends
        assert [ct for ct, _ in records_of(sent)] == [21] and alerts_in(sent) == [42], sent.hex()


def test_a_refused_resumption_with_a_changed_certificate_is_judged_and_forgotten(pki, good_leaf, other_leaf):
    """Open 1 against OpenSSL fills the cache; open 2's server does not resume (a new session id)
    and shows a certificate for another name: verify_failed with bad_certificate, no next
    flight, and the offered session forgotten (the next open is a full handshake)."""
    cache, key = SessionCache(), ("revhold-changed", 1)
    kw = dict(cipher_suites=(ECDHE_RSA_GCM,))
    first = TlsClientSession(settings(pki, **kw), cache, key)
    drive(first, MemoryServer(good_leaf))
    assert first.state == "established" and key in cache
    for cut in ("one_read", "one_byte_reads"):
        second = TlsClientSession(settings(pki, **kw), cache, key)
        sent = drive(second, MemoryServer(other_leaf), CUTS[cut])
        ends = ends_of(second)
        assert second.state == "failed" and len(ends) == 1 and ends[0].kind == "verify_failed", ends
        assert [ct for ct, _ in records_of(sent)] == [21] and alerts_in(sent) == [42], sent.hex()
        assert key not in cache
        third = TlsClientSession(settings(pki, **kw), cache, key)
        drive(third, MemoryServer(good_leaf))
        assert third.state == "established" and not ends_of(third)[-1].resumed


def _malformed_list_flight():
    """A hand-made server whose Certificate list begins with an entry of garbage DER (Mbed TLS's
    X.509 parser fails on it: bad_certificate) and ends in a truncated entry (the sniffer calls
    the list malformed); then it records what the modem sends."""
    from tests.e2e import test_adversarial_hostile_servers_7 as h7
    entries = _entry(GARBAGE_DER) + b"\x00\x10\x00" + b"\x30" * 10
    body = len(entries).to_bytes(3, "big") + entries

    def script(c) -> None:
        f = h7.Flight(c, cert_body=body)
        c.sock.sendall(f.records())
        h7.hold(c)
        c.ended = True
    return script


# Was a bug, fixed (the held verdict applies only once a step began at SERVER_CERTIFICATE and Mbed
# TLS moved past it -- a resumed handshake never takes one; no step runs after that (no key
# exchange, no key log); a malformed list Mbed TLS fails on at that step keeps Mbed TLS's alert:
# tls_engine/session.py _cert_step_seen): EC2x seclevel 1, a malformed Certificate list Mbed TLS
# fails on with an X.509 error: the server gets no alert (seclevel 0: bad_certificate)
def test_ec2x_a_malformed_list_sends_the_same_alert_at_both_seclevels(ec2x_strict, emulator, caplog):
    """EC2x: the same server at seclevel 0 and 1: 566 both times, and the same reason and
    records on the wire (seclevel 0: Mbed TLS's bad_certificate alert)."""
    from tests.e2e import test_adversarial_hostile_servers_2 as h2
    from tests.e2e import test_adversarial_hostile_servers_7 as h7
    from tests.e2e.hostile_support import open_answer
    from tests.e2e.socket_support import wait_for
    from emulator.testing.peers.pki import default_pki
    host, advance, port = ec2x_strict
    assert host.upload(h7.CA_FILE, default_pki().ca.cert_pem).endswith(OK)
    for line in ('"ciphersuite",1,0X009C', f'"cacert",1,"{h7.CA_FILE}"'):
        assert host.at(f"AT+QSSLCFG={line}") == OK
    seen = []
    with h7.Server(emulator, _malformed_list_flight(), _malformed_list_flight()) as server:
        emulator.router.add_map(PTY_NAME, 443, "127.0.0.1", server.port)
        for level in (0, 1):
            assert host.at(f'AT+QSSLCFG="seclevel",1,{level}') == OK
            mark = len(caplog.records)
            assert host.at(f'AT+QSSLOPEN=1,1,2,"{PTY_NAME}",443,0') == OK
            assert open_answer(host, 2, timeout=60) == 566
            assert h2.qigeterror(host) == 566
            wait_for(lambda: len(server.conns) > level and hasattr(server.conns[level], "ended"), 30,
                     "the connection ended")
            reasons = [r.getMessage().split("): ", 1)[-1] for r in caplog.records[mark:]
                       if r.getMessage().startswith("SSL open 2 ")]
            seen.append((reasons, server.conns[level].after))
    assert seen[0][1] == [(21, b"\x02\x2a")], seen
    assert seen[1] == seen[0], seen


# == DTLS: unaffected (every Certificate checked, the one used judged at the end) ===================
@pytest.fixture
def openssl_servers():
    from emulator.testing.peers import OpenSslServer
    started = []

    def start(*args: str):
        server = OpenSslServer(list(args))
        started.append(server)
        return server
    yield start
    for server in started:
        server.stop()


@pytest.mark.parametrize("name", ["other.example", "www.iottest.work"], ids=["bad_chain", "good_chain"])
def test_dtls_never_holds_a_verdict(openssl_servers, pki, monkeypatch, name):
    """DTLS (openssl s_server -dtls1_2): _hold_verdict / the state reader are never used; a chain
    for another name still fails as a failed check, a good one opens."""
    from tests.e2e.test_adversarial_dtls_cert_review import _finish, _session, drive as dtls_drive, serve_args
    calls = []
    real_hold = session_module.TlsClientSession._hold_verdict
    real_state = session_module.TlsClientSession._handshake_state
    monkeypatch.setattr(session_module.TlsClientSession, "_hold_verdict",
                        lambda self, *a: calls.append("hold") or real_hold(self, *a))
    monkeypatch.setattr(session_module.TlsClientSession, "_handshake_state",
                        lambda self: calls.append("state") or real_state(self))
    files = pki.issue(f"revhold-dtls-{name}", name)
    server = openssl_servers(*serve_args(pki, files, "-dtls1_2"))
    session, events, sock = dtls_drive(_session(pki, dtls=True), server.address, timeout=60)
    try:
        ends = [e for e in events if isinstance(e, (TlsFailure, HandshakeComplete))]
        if name == "other.example":
            assert session.state == "failed" and ends and ends[0].kind == "verify_failed", ends
            assert "other.example" in ends[0].reason, ends
        else:
            assert session.state == "established", ends
    finally:
        _finish(session, sock)
    assert calls == [], calls
