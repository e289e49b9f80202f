"""seclevel 0/1/2, names, modem-clock dates and the EC2x relax flags, end to end
against OpenSSL servers (the server's view of the failure is checked too)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from emulator.testing.engine_client import ClientDriver
from emulator.testing.peers import NOW, ServerIdentity, TlsServer, make_cert
from tls_engine import HandshakeComplete, TlsClientSession, TlsFailure


def handshake(settings, identity, **server_kwargs):
    with TlsServer(identity, legacy=True, **server_kwargs) as server:
        driver = ClientDriver(TlsClientSession(settings), server.port)
        result = driver.handshake()
        if isinstance(result, HandshakeComplete):
            assert driver.exchange(b"ping") == b"ping"
            driver.session.close()
            driver.flush()
        driver.close()
        server.conn.done.wait(5)
    return result, server.conn


def modem_clock(moment: datetime):
    return lambda: moment


def assert_verify_failed(result, *fragments):
    assert isinstance(result, TlsFailure), result
    assert result.kind == "verify_failed", result
    for fragment in fragments:
        assert fragment in result.reason, result.reason


# --- seclevel ---------------------------------------------------------------

def test_seclevel0_accepts_any_server(rsa_leaf, other_ca):
    settings_ca = other_ca.cert_pem
    result, _ = handshake(_settings(seclevel=0, ca_pem=settings_ca), rsa_leaf)
    assert isinstance(result, HandshakeComplete)


def test_seclevel1_with_right_ca(rsa_leaf, base_settings):
    result, _ = handshake(base_settings(), rsa_leaf)
    assert isinstance(result, HandshakeComplete)


def test_seclevel1_with_wrong_ca_fails_and_server_sees_unknown_ca(rsa_leaf, base_settings, other_ca):
    result, seen = handshake(base_settings(ca_pem=other_ca.cert_pem), rsa_leaf)
    assert_verify_failed(result, "server certificate not signed by RAM:cacert.pem")
    assert "UNKNOWN_CA" in (seen.error or "")


def test_seclevel1_without_ca_is_bad_config():
    session = TlsClientSession(_settings(seclevel=1, ca_pem=None))
    session.start()
    [failure] = session.events()
    assert failure.kind == "bad_config" and "needs a CA certificate" in failure.reason


def test_seclevel2_presents_client_certificate(rsa_leaf, client_leaf, ca, base_settings):
    settings = base_settings(seclevel=2, client_cert_pem=client_leaf.cert_pem,
                             client_key_pem=client_leaf.key_pem)
    result, seen = handshake(settings, rsa_leaf, client_ca=ca, require_client_cert=True)
    assert isinstance(result, HandshakeComplete), result
    assert dict(x[0] for x in seen.client_cert["subject"])["commonName"] == "modem-client"


def test_server_requiring_client_cert_rejects_seclevel1(rsa_leaf, ca, base_settings):
    result, seen = handshake(base_settings(seclevel=1), rsa_leaf, client_ca=ca, require_client_cert=True)
    assert isinstance(result, TlsFailure) and result.kind == "handshake_failed", result
    assert "server sent fatal alert" in result.reason
    assert seen.error is not None


def test_seclevel2_without_client_key_is_bad_config(client_leaf, base_settings):
    session = TlsClientSession(base_settings(seclevel=2, client_cert_pem=client_leaf.cert_pem))
    session.start()
    [failure] = session.events()
    assert failure.kind == "bad_config" and "client key is missing" in failure.reason


def test_garbage_ca_is_bad_config():
    session = TlsClientSession(_settings(seclevel=1, ca_pem=b"-----BEGIN CERTIFICATE-----\nnope\n"
                                                           b"-----END CERTIFICATE-----\n"))
    session.start()
    [failure] = session.events()
    assert failure.kind == "bad_config" and "RAM:cacert.pem" in failure.reason


# --- names ------------------------------------------------------------------

def test_name_mismatch_fails(rsa_leaf, base_settings):
    result, seen = handshake(base_settings(server_name="mqtt.example.test"), rsa_leaf)
    assert_verify_failed(result, "does not match 'mqtt.example.test'")
    assert "BAD_CERTIFICATE" in (seen.error or "")


def test_ip_literal_matches_ip_san(rsa_leaf, base_settings):
    result, _ = handshake(base_settings(server_name="127.0.0.1"), rsa_leaf)
    assert isinstance(result, HandshakeComplete), result


def test_ip_literal_does_not_match_dns_only_cert(pki, base_settings):
    dns_only = pki.issue("engine-dns-only", "localhost")
    result, _ = handshake(base_settings(server_name="127.0.0.1"), dns_only)
    assert_verify_failed(result, "does not match '127.0.0.1'")


def test_wildcard_certificate(pki, base_settings):
    wildcard = pki.issue("engine-wildcard", "*.example.test")
    ok, _ = handshake(base_settings(server_name="Broker.Example.Test"), wildcard)
    assert isinstance(ok, HandshakeComplete), ok
    deep, _ = handshake(base_settings(server_name="a.broker.example.test"), wildcard)
    assert_verify_failed(deep, "does not match")


# --- dates at the modem clock ---------------------------------------------------

@pytest.fixture(scope="module")
def one_year_leaf(pki):
    """trustme certificates last until year 3000 by default: give this one a year."""
    return pki.issue("engine-one-year", "localhost",
                     not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=365))


def test_expired_at_modem_clock_fails_though_valid_now(one_year_leaf, base_settings):
    later = datetime(2040, 1, 1, tzinfo=timezone.utc)
    result, seen = handshake(base_settings(ignore_local_time=False, clock=modem_clock(later)), one_year_leaf)
    assert_verify_failed(result, "server certificate expired at modem clock 2040-01-01 00:00:00 (notAfter ")
    assert "CERTIFICATE_EXPIRED" in (seen.error or "")


def test_expired_at_modem_clock_passes_with_ignore_local_time(one_year_leaf, base_settings):
    later = datetime(2040, 1, 1, tzinfo=timezone.utc)
    result, _ = handshake(base_settings(ignore_local_time=True, clock=modem_clock(later)), one_year_leaf)
    assert isinstance(result, HandshakeComplete), result


def test_expired_now_but_valid_at_modem_clock_passes(pki, base_settings):
    old = pki.issue("engine-expired", "localhost",
                    not_before=NOW - timedelta(days=400), not_after=NOW - timedelta(days=30))
    back_then = modem_clock(NOW - timedelta(days=100))
    result, _ = handshake(base_settings(ignore_local_time=False, clock=back_then), old)
    assert isinstance(result, HandshakeComplete), result
    at_system_clock, _ = handshake(base_settings(ignore_local_time=False), old)
    assert_verify_failed(at_system_clock, "server certificate expired at modem clock")


def test_not_yet_valid_at_modem_clock(pki, base_settings):
    future = pki.issue("engine-future", "localhost",
                       not_before=NOW + timedelta(days=10), not_after=NOW + timedelta(days=40))
    result, _ = handshake(base_settings(ignore_local_time=False), future)
    assert_verify_failed(result, "server certificate not yet valid at modem clock")
    later = modem_clock(NOW + timedelta(days=20))
    result, _ = handshake(base_settings(ignore_local_time=False, clock=later), future)
    assert isinstance(result, HandshakeComplete), result


# --- chains and relax flags --------------------------------------------------------

@pytest.fixture(scope="module")
def own_root():
    return make_cert("Test Root", None, ca=True)


@pytest.fixture(scope="module")
def intermediate(own_root):
    return make_cert("Test Intermediate", own_root, ca=True)


@pytest.fixture(scope="module")
def chained_leaf(intermediate):
    return make_cert("localhost", intermediate, ca=False, names=("localhost",))


def test_intermediate_chain_verifies_to_root(own_root, intermediate, chained_leaf):
    settings = _settings(seclevel=1, ca_pem=own_root.cert_pem)
    result, _ = handshake(settings, ServerIdentity(chained_leaf, intermediate))
    assert isinstance(result, HandshakeComplete), result


def test_missing_intermediate_fails(own_root, chained_leaf):
    result, _ = handshake(_settings(seclevel=1, ca_pem=own_root.cert_pem), ServerIdentity(chained_leaf))
    assert_verify_failed(result, "not signed by RAM:cacert.pem", "CN=Test Intermediate")


def test_ignore_multicert_chain_verify_checks_only_the_leaf_link(other_ca, intermediate, chained_leaf):
    unrelated_anchor = other_ca.cert_pem
    strict = _settings(seclevel=1, ca_pem=unrelated_anchor)
    result, _ = handshake(strict, ServerIdentity(chained_leaf, intermediate))
    assert_verify_failed(result, "not signed by")
    relaxed = _settings(seclevel=1, ca_pem=unrelated_anchor, ignore_multicert_chain_verify=True)
    result, _ = handshake(relaxed, ServerIdentity(chained_leaf, intermediate))
    assert isinstance(result, HandshakeComplete), result
    # ... but the leaf's own issuer must still be there.
    result, _ = handshake(relaxed, ServerIdentity(chained_leaf))
    assert_verify_failed(result, "not signed by")


def test_bad_signature_fails_unless_ignore_invalid_cert_sign(own_root):
    forger = make_cert("forger", None, ca=True)
    forged = make_cert("localhost", own_root, ca=False, names=("localhost",), signing_key=forger.key)
    strict = _settings(seclevel=1, ca_pem=own_root.cert_pem)
    result, _ = handshake(strict, ServerIdentity(forged))
    assert_verify_failed(result, "does not verify")
    relaxed = _settings(seclevel=1, ca_pem=own_root.cert_pem, ignore_invalid_cert_sign=True)
    result, _ = handshake(relaxed, ServerIdentity(forged))
    assert isinstance(result, HandshakeComplete), result


def test_ignore_invalid_cert_sign_relaxes_nothing_else(own_root):
    forger = make_cert("forger", None, ca=True)
    forged = make_cert("localhost", own_root, ca=False, names=("localhost",), signing_key=forger.key)
    relaxed = dict(seclevel=1, ca_pem=own_root.cert_pem, ignore_invalid_cert_sign=True)
    wrong_name, _ = handshake(_settings(server_name="other.test", **relaxed), ServerIdentity(forged))
    assert_verify_failed(wrong_name, "does not match")
    later = modem_clock(datetime(2045, 6, 1, tzinfo=timezone.utc))
    expired, _ = handshake(_settings(ignore_local_time=False, clock=later, **relaxed), ServerIdentity(forged))
    assert_verify_failed(expired, "expired at modem clock 2045-06-01")
    stranger = make_cert("localhost", forger, ca=False, names=("localhost",))
    untrusted, _ = handshake(_settings(**relaxed), ServerIdentity(stranger))
    assert_verify_failed(untrusted, "not signed by")


def test_ignore_local_time_relaxes_nothing_else(rsa_leaf, other_ca):
    result, _ = handshake(_settings(seclevel=1, ca_pem=other_ca.cert_pem, ignore_local_time=True), rsa_leaf)
    assert_verify_failed(result, "not signed by")


def _settings(**overrides):
    from tls_engine import TlsSettings

    values = dict(server_name="localhost", ca_label="RAM:cacert.pem")
    values.update(overrides)
    return TlsSettings(**values)


def test_verify_failure_sends_only_an_alert_never_the_next_flight(rsa_leaf, other_ca):
    import socket

    session = TlsClientSession(_settings(seclevel=1, ca_pem=other_ca.cert_pem))
    with TlsServer(rsa_leaf, legacy=True) as server:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        session.start()
        sock.sendall(session.outgoing()[0])
        while session.state == "handshaking":
            session.receive(sock.recv(65536))
        out = session.outgoing()
        sock.close()
    assert session.state == "failed"
    assert out == [b"\x15\x03\x03\x00\x02\x02\x30"]  # fatal unknown_ca, in clear; no ClientKeyExchange
