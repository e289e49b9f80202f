"""Configuration errors (all become TlsFailure events), RFC 6125 name matching and
the cipher table."""
from __future__ import annotations

import pytest

from tls_engine import CIPHER_TABLE, TlsClientSession, TlsSettings, suite_available
from tls_engine.verify import dns_name_matches


def failure_of(**settings):
    session = TlsClientSession(TlsSettings(server_name="localhost", **settings))
    session.start()
    [failure] = session.events()
    assert session.state == "failed" and session.outgoing() == []
    return failure


def test_psk_with_empty_key_is_bad_config():
    failure = failure_of(psk_identity=b"modem", psk_key=b"")
    assert failure.kind == "bad_config" and "empty key" in failure.reason


def test_unknown_suite_id_is_unsupported_cipher():
    failure = failure_of(cipher_suites=(0x1234,))
    assert failure.kind == "unsupported_cipher" and "0x1234" in failure.reason


def test_bad_sslversion_is_bad_config():
    assert failure_of(ssl_version=7).kind == "bad_config"


def test_garbage_client_key_is_bad_config(client_leaf):
    failure = failure_of(seclevel=2, ca_pem=None, client_cert_pem=client_leaf.cert_pem,
                         client_key_pem=b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    assert failure.kind == "bad_config"


def test_client_key_of_another_certificate_is_bad_config(ca, client_leaf, rsa_leaf):
    failure = failure_of(seclevel=2, ca_pem=ca.cert_pem, client_cert_pem=client_leaf.cert_pem,
                         client_key_pem=rsa_leaf.key_pem)
    assert failure.kind == "bad_config" and "does not belong" in failure.reason


def test_too_many_alpn_names_is_bad_config():
    assert failure_of(alpn=tuple(f"p{i}" for i in range(9))).kind == "bad_config"


@pytest.mark.parametrize("pattern, host, ok", [        # (Mbed TLS 2.28 x509_crt_check_cn)
    ("example.test", "EXAMPLE.test", True),
    ("example.test", "EXAMPLE.test.", False),           # byte for byte: the dot counts
    ("example.test.", "example.test", False),
    ("*.example.test", "a.example.test", True),
    ("*.example.test", "A.EXAMPLE.test", True),
    ("*.example.test", "example.test", False),
    ("*.example.test", "a.b.example.test", False),
    ("*.test", "example.test", True),                   # one label, however few follow
    ("*.test", ".test", False),                         # (nothing before the host's first dot)
    ("a*.example.test", "ab.example.test", False),
    ("*", "localhost", False),
    ("*.", "a.", False),
])
def test_mbedtls_dns_matching(pattern, host, ok):
    assert dns_name_matches(pattern, host) is ok


def test_cipher_table_matches_the_manual():
    assert len(CIPHER_TABLE) == 31
    assert CIPHER_TABLE[0xC02F].iana_name == "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
    assert CIPHER_TABLE[0x0035].mbedtls_name == "TLS-RSA-WITH-AES-256-CBC-SHA"
    assert CIPHER_TABLE[0x000A].code == "0X000A"
    import mbedtls._tls

    for suite in CIPHER_TABLE.values():  # the library agrees on every id <-> name
        assert mbedtls._tls._get_ciphersuite_name(suite.id) == suite.mbedtls_name
    rc4_3des = {s for s in CIPHER_TABLE if "RC4" in CIPHER_TABLE[s].iana_name or "3DES" in CIPHER_TABLE[s].iana_name}
    assert {s for s in CIPHER_TABLE if not suite_available(s)} == rc4_3des
