"""Certificates for the engine tests, from the run's shared PKI (tests/conftest.py `pki`:
emulator.testing.peers.pki), and TlsSettings against its CA."""
from __future__ import annotations

import pytest

from tls_engine import TlsSettings


@pytest.fixture(scope="session")
def ca(pki):
    return pki.ca


@pytest.fixture(scope="session")
def other_ca(pki):
    return pki.wrong_ca


@pytest.fixture(scope="session")
def rsa_leaf(pki):
    """Server certificate for localhost / 127.0.0.1 with an RSA key (RSA suites)."""
    return pki.issue("engine-server", "localhost", "127.0.0.1")


@pytest.fixture(scope="session")
def client_leaf(pki):
    return pki.issue("engine-client", "modem-client@example.test", common_name="modem-client")


@pytest.fixture
def base_settings(ca):
    """seclevel 1 against the test CA, dialled as localhost."""
    def make(**overrides) -> TlsSettings:
        values = dict(server_name="localhost", seclevel=1, ca_pem=ca.cert_pem,
                      ca_label="RAM:cacert.pem")
        values.update(overrides)
        return TlsSettings(**values)
    return make
