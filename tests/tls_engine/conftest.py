"""Shared throw-away PKI (trustme) for the engine tests."""
from __future__ import annotations

import pytest
import trustme

from tls_engine import TlsSettings


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA(key_type=trustme.KeyType.RSA)


@pytest.fixture(scope="session")
def other_ca() -> trustme.CA:
    return trustme.CA(key_type=trustme.KeyType.RSA)


@pytest.fixture(scope="session")
def rsa_leaf(ca):
    """Server certificate for localhost / 127.0.0.1 with an RSA key (RSA suites)."""
    return ca.issue_cert("localhost", "127.0.0.1", key_type=trustme.KeyType.RSA)


@pytest.fixture(scope="session")
def client_leaf(ca):
    return ca.issue_cert("modem-client@example.test", common_name="modem-client",
                         key_type=trustme.KeyType.RSA)


@pytest.fixture
def base_settings(ca):
    """seclevel 1 against the test CA, dialled as localhost."""
    def make(**overrides) -> TlsSettings:
        values = dict(server_name="localhost", seclevel=1, ca_pem=ca.cert_pem.bytes(),
                      ca_label="RAM:cacert.pem")
        values.update(overrides)
        return TlsSettings(**values)
    return make
