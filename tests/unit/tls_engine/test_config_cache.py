"""tls_engine.config keeps built configurations and contexts, verify keeps parsed CA
anchors (issue 13: cached between opens).  None of them may ever serve stale material: a
changed setting, CA file, client certificate or native self-check outcome takes effect at
the next open."""
from __future__ import annotations

import pytest
from cryptography import x509

from emulator.testing.engine_client import ClientDriver
from emulator.testing.peers import TlsServer
from tls_engine import HandshakeComplete, TlsClientSession, TlsFailure, native
from tls_engine import config, verify


def connect(settings, server):
    driver = ClientDriver(TlsClientSession(settings), server.port)
    result = driver.handshake()
    driver.close()
    return result


def started(settings) -> TlsClientSession:
    session = TlsClientSession(settings)
    session.start()
    return session


def test_the_same_settings_share_one_configuration_and_context(base_settings):
    first, second = started(base_settings(seclevel=0)), started(base_settings(seclevel=0))
    assert first._plan.configuration is second._plan.configuration
    assert config.client_context(first._plan, first.settings)[0] is \
        config.client_context(second._plan, second.settings)[0]


def test_a_changed_cipher_suite_takes_effect_at_the_next_open(rsa_leaf, base_settings):
    with TlsServer(rsa_leaf, legacy=True) as server:
        for suite_id, openssl_name in [(0xC02F, "ECDHE-RSA-AES128-GCM-SHA256"), (0x0035, "AES256-SHA"),
                                       (0xC02F, "ECDHE-RSA-AES128-GCM-SHA256")]:
            result = connect(base_settings(cipher_suites=(suite_id,)), server)
            assert isinstance(result, HandshakeComplete), result
            assert server.wait_handshake().cipher == openssl_name


def test_a_changed_tls_version_takes_effect_at_the_next_open(rsa_leaf, base_settings):
    with TlsServer(rsa_leaf, legacy=True) as server:
        for ssl_version, expected in [(3, "TLSv1.2"), (1, "TLSv1.0"), (3, "TLSv1.2")]:
            result = connect(base_settings(ssl_version=ssl_version), server)
            assert isinstance(result, HandshakeComplete) and result.version == expected, result


def test_a_replaced_ca_is_used_by_the_next_open(rsa_leaf, base_settings, ca, other_ca):
    """Same label (the file name), other bytes: parsed anew, never the cached anchors."""
    with TlsServer(rsa_leaf, legacy=True) as server:
        assert isinstance(connect(base_settings(ca_pem=ca.cert_pem), server), HandshakeComplete)
        failure = connect(base_settings(ca_pem=other_ca.cert_pem), server)
        assert isinstance(failure, TlsFailure) and failure.kind == "verify_failed", failure
        assert isinstance(connect(base_settings(ca_pem=ca.cert_pem), server), HandshakeComplete)


def test_parsed_anchors_are_keyed_by_content_and_handed_out_as_copies(base_settings, ca, other_ca):
    first = verify.load_anchors(base_settings(ca_pem=ca.cert_pem))
    first.clear()                                      # a caller's list is its own
    again = verify.load_anchors(base_settings(ca_pem=bytes(ca.cert_pem)))
    subject = x509.load_pem_x509_certificate(ca.cert_pem).subject
    other_subject = x509.load_pem_x509_certificate(other_ca.cert_pem).subject
    assert len(again) == 1 and again[0].subject == subject
    other = verify.load_anchors(base_settings(ca_pem=other_ca.cert_pem))
    assert other[0].subject == other_subject != subject


def test_a_replaced_client_certificate_is_sent_at_the_next_open(pki, ca, base_settings):
    one = pki.issue("cache-client-one", "one@example.test", common_name="client-one")
    two = pki.issue("cache-client-two", "two@example.test", common_name="client-two")
    server_cert = pki.issue("cache-server", "localhost")
    with TlsServer(server_cert, legacy=True, client_ca=ca.cert_pem, require_client_cert=True) as server:
        for leaf, name in [(one, "client-one"), (two, "client-two"), (one, "client-one")]:
            settings = base_settings(seclevel=2, client_cert_pem=leaf.cert_pem, client_key_pem=leaf.key_pem)
            assert isinstance(connect(settings, server), HandshakeComplete)
            assert f"CN={name}" in server.wait_handshake().client_cert_subject


@pytest.mark.needs_native
def test_a_new_native_self_check_rebuilds_the_default_offer(base_settings):
    """The table default's suites depend on the native layer: its re-run is a new key."""
    before = started(base_settings(seclevel=0))._plan
    native._init()
    assert native.available(), native.unavailable_reason()
    after = started(base_settings(seclevel=0))._plan
    assert after.configuration is not before.configuration


def test_a_failed_configuration_is_refused_every_time(ca, base_settings):
    for _ in range(2):
        session = started(base_settings(seclevel=2, client_cert_pem=ca.cert_pem))   # no key
        [failure] = session.events()
        assert isinstance(failure, TlsFailure) and failure.kind == "bad_config"
        assert "client key is missing" in failure.reason


def test_seclevel_2_without_any_client_pair_starts_the_handshake(base_settings):
    """seclevel 2 with neither certificate nor key: no client chain, the handshake starts
    (a ClientHello goes out) -- the note asks for the pair only when the server requires
    client authentication; an empty Certificate answers a CertificateRequest."""
    session = started(base_settings(seclevel=2))
    assert session.events() == [] and session.state == "handshaking"
    assert session.outgoing() and session.outgoing() == []


@pytest.mark.needs_native
def test_a_new_key_log_gets_the_next_sessions_lines(rsa_leaf, base_settings):
    first, second = [], []
    with TlsServer(rsa_leaf, legacy=True) as server:
        for lines in (first, second, first):
            assert isinstance(connect(base_settings(keylog=lines.append), server), HandshakeComplete)
    assert len(first) == 2 and len(second) == 1


def test_an_encrypted_client_key_is_decrypted_only_with_its_password_every_time(pki, base_settings):
    """The key password is part of the configuration's key: a right one never lets a wrong
    one (or none) reuse the decrypted key."""
    from cryptography.hazmat.primitives import serialization
    leaf = pki.issue("cache-client-enc", "enc@example.test", common_name="client-enc")
    key = serialization.load_pem_private_key(leaf.key_pem, password=None)
    encrypted = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.BestAvailableEncryption(b"right"))
    for password, ok in [(b"right", True), (b"wrong", False), (None, False), (b"right", True)]:
        session = started(base_settings(seclevel=2, client_cert_pem=leaf.cert_pem, client_key_pem=encrypted,
                                        client_key_password=password))
        failures = [e for e in session.events() if isinstance(e, TlsFailure)]
        if ok:
            assert failures == [] and session.outgoing(), password
        else:
            assert len(failures) == 1 and failures[0].kind == "bad_config", (password, failures)
            assert "password" in failures[0].reason, failures[0].reason


def _trusted_ders(settings) -> list[bytes]:
    store = started(settings)._plan.configuration.trust_store
    return [] if store is None else [crt.to_DER() for crt in store]


def _der_of(pem: bytes) -> bytes:
    from cryptography.hazmat.primitives import serialization
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


def test_mbedtls_trusts_the_ca_file_it_is_configured_with_keyed_by_content(base_settings, ca, other_ca):
    """seclevel >= 1: the CA file's certificates are Mbed TLS's trust store (its chain walk
    stops there, as the module's); a replaced CA file is another configuration; seclevel 0
    has none (and shares one configuration whatever the CA file holds)."""
    assert _trusted_ders(base_settings(ca_pem=ca.cert_pem)) == [_der_of(ca.cert_pem)]
    assert _trusted_ders(base_settings(ca_pem=other_ca.cert_pem)) == [_der_of(other_ca.cert_pem)]
    assert _trusted_ders(base_settings(ca_pem=bytes(ca.cert_pem), seclevel=2)) == [_der_of(ca.cert_pem)]
    bundle = base_settings(ca_pem=ca.cert_pem + b"\n" + other_ca.cert_pem)
    assert _trusted_ders(bundle) == [_der_of(ca.cert_pem), _der_of(other_ca.cert_pem)]
    zero_a, zero_b = started(base_settings(seclevel=0)), started(base_settings(seclevel=0, ca_pem=other_ca.cert_pem))
    assert zero_a._plan.configuration.trust_store is None
    assert zero_a._plan.configuration is zero_b._plan.configuration


def test_a_ca_block_mbedtls_cannot_parse_is_left_out_of_its_trust_store(base_settings, ca):
    """The check (verify.py) reads the CA file itself; a block Mbed TLS refuses only stays out
    of Mbed TLS's trust store, the configuration is still built."""
    junk = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    assert _trusted_ders(base_settings(ca_pem=junk + ca.cert_pem)) == [_der_of(ca.cert_pem)]
    assert _trusted_ders(base_settings(ca_pem=b"\xff" + junk)) == []
