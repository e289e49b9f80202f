"""The client certificate file is read as the CA file is: both go through Mbed TLS's
mbedtls_x509_crt_parse on the module, so the emulator reads both with verify._ca_walk (PEM when
"-----BEGIN CERTIFICATE-----" comes before the first NUL, else one DER certificate; a block
it refuses fails).  Before, the client certificate went through cryptography's PEM reader
(and "-----BEGIN" of any kind meant PEM): a "-----BEGIN X509 CERTIFICATE-----" client
certificate was offered though the same file as the CA was refused, and a base64 with blank
lines (Mbed TLS skips them) or a block with bytes after the certificate's SEQUENCE (Mbed TLS
ignores them) failed the open though Mbed TLS reads them."""
from __future__ import annotations

import base64

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from tls_engine.config import _client_chain
from tls_engine.errors import EngineConfigError
from tls_engine.settings import TlsSettings
from tls_engine.verify import load_anchors

H, F = b"-----BEGIN CERTIFICATE-----", b"-----END CERTIFICATE-----"


@pytest.fixture(scope="module")
def pair():
    ca = trustme.CA()
    leaf = ca.issue_cert("client.example")
    return leaf.cert_chain_pems[0].bytes(), leaf.private_key_pem.bytes(), ca.cert_pem.bytes()


def _pem_of(der: bytes) -> bytes:
    b64 = base64.encodebytes(der).replace(b"\n", b"")
    return H + b"\n" + b"\n".join(b64[i:i + 64] for i in range(0, len(b64), 64)) + b"\n" + F + b"\n"


def _der(pem: bytes) -> bytes:
    from cryptography import x509
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


def _variants(cert: bytes) -> dict[str, tuple[bytes, bool]]:
    """name: (file, whether Mbed TLS reads it whole)."""
    body = cert[len(H) + 1:cert.index(F)]
    return {
        "pem": (cert, True),
        "der": (_der(cert), True),
        "x509_certificate_tag": (cert.replace(b"BEGIN CERT", b"BEGIN X509 CERT")
                                 .replace(b"END CERT", b"END X509 CERT"), False),
        "blank_lines_in_base64": (H + b"\n" + body.replace(b"\n", b"\n\n") + F + b"\n", True),
        "bytes_after_the_sequence": (_pem_of(_der(cert) + b"\0\0\0"), True),
        "nul_before_the_header": (b"\0" + cert, False),
        "a_corrupt_second_block": (cert + H + b"\nAAAA\n" + F + b"\n", False),
    }


def _reads_as_client_cert(cert: bytes, key: bytes) -> bool:
    try:
        _client_chain(TlsSettings(server_name="x", seclevel=2, client_cert_pem=cert, client_key_pem=key))
    except EngineConfigError:
        return False
    return True


def _reads_as_ca(ca: bytes) -> bool:
    try:
        return bool(load_anchors(TlsSettings(server_name="x", seclevel=1, ca_pem=ca)))
    except EngineConfigError:
        return False


@pytest.mark.parametrize("name", ["pem", "der", "x509_certificate_tag", "blank_lines_in_base64",
                                  "bytes_after_the_sequence", "nul_before_the_header",
                                  "a_corrupt_second_block"])
def test_a_client_certificate_file_is_read_as_the_same_file_is_as_a_ca(pair, name):
    cert, key, _ = pair
    data, mbedtls_reads = _variants(cert)[name]
    assert _reads_as_ca(data) is mbedtls_reads            # (the CA reading, Mbed TLS's)
    assert _reads_as_client_cert(data, key) is mbedtls_reads


def test_the_chain_offered_is_the_blocks_mbed_tls_keeps(pair):
    """Leaf then its CA in one file: both offered, in file order, whatever text surrounds them."""
    cert, key, ca = pair
    certs, _ = _client_chain(TlsSettings(server_name="x", seclevel=2,
                                         client_cert_pem=b"leaf:\n" + cert + b"issuer:\n" + ca,
                                         client_key_pem=key))
    assert [c.to_DER() for c in certs] == [_der(cert), _der(ca)]
