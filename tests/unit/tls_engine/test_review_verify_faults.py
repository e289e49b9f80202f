"""Review of the "every fault, Mbed TLS's alert" change to ChainVerifier.verify (013b274, 60b27bf).

Before the change verify() returned at the first failing check, so an untrusted chain never
reached the profile, usage, date and name checks; now every check runs on whatever the path
walk reached.  The three "Was a bug" tests were inputs that then raised (a VerifyProblem is expected; the
session turned the exception into certificate_unknown) or whose alert was not Mbed TLS's; the
other tests pin behaviour of the continued walk that is right and worth keeping.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from tests.unit.tls_engine.der_support import children, contents, element
from tls_engine import TlsSettings
from tls_engine.verify import (ALERT_ACCESS_DENIED, ALERT_BAD_CERT, ALERT_UNKNOWN_CA, ChainVerifier,
                               VerifyProblem)

NOW = datetime.now(timezone.utc)
DER = serialization.Encoding.DER
PEM = serialization.Encoding.PEM
HOST = "localhost"


def _ec():
    return ec.generate_private_key(ec.SECP256R1())


RSA_KEY = rsa.generate_private_key(65537, 2048)
ROOT_KEY, LEAF_KEY, OTHER_KEY = _ec(), _ec(), _ec()


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, issuer: str, key, signer, *, ca: bool = False, san: str | None = None,
          window: tuple[datetime, datetime] | None = None) -> x509.Certificate:
    not_before, not_after = window or (NOW - timedelta(days=1), NOW + timedelta(days=30))
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
    return builder.sign(signer, hashes.SHA256())


ROOT = _cert("Root", "Root", ROOT_KEY, ROOT_KEY, ca=True)


def _verify(chain: list[x509.Certificate], anchors=(ROOT,), **flags) -> VerifyProblem | None:
    pem = b"".join(a.public_bytes(PEM) for a in anchors)
    settings = TlsSettings(server_name=HOST, seclevel=1, ca_pem=pem, ca_label="UFS:ca.pem",
                           ignore_local_time=flags.pop("ignore_local_time", False), **flags)
    verifier = ChainVerifier(settings, x509.load_pem_x509_certificates(pem))
    return verifier.verify([c.public_bytes(DER) for c in chain], "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256")


# --- minimal DER surgery (the hostile certificates cryptography will not build) -------------

def _with_signature_algorithm(cert: x509.Certificate, algorithm: bytes) -> x509.Certificate:
    """cert with `algorithm` (an AlgorithmIdentifier's DER) in both its places (the signature
    no longer verifies, which is beside the point)."""
    tbs, _, signature = children(contents(cert.public_bytes(DER)))
    fields = children(contents(tbs))
    fields[2] = algorithm                       # (version, serial, signature, ...)
    return x509.load_der_x509_certificate(element(0x30, element(0x30, b"".join(fields)) + algorithm + signature))


RSASSA_PSS_WITHOUT_PARAMETERS = bytes.fromhex("300b06092a864886f70d01010a")


# --- defects ---------------------------------------------------------------------------------

# Was a bug, fixed: _profile_problems judging an untrusted path read the leaf's
# signature_hash_algorithm, which raises ValueError ('Invalid RSA PSS parameters') for
# id-RSASSA-PSS without parameters (before the multi-fault change: unknown_ca).  Mbed TLS 2.28
# cannot parse such a certificate (x509_get_rsassa_pss_params: UNEXPECTED_TAG): bad_certificate,
# whatever the relax flags (ignore_cert_chain used to accept it).
def test_a_pss_leaf_without_parameters_from_an_unknown_issuer_is_a_problem_not_an_exception():
    leaf = _with_signature_algorithm(_cert("leaf", "Root", RSA_KEY, RSA_KEY, san=HOST),
                                     RSASSA_PSS_WITHOUT_PARAMETERS)
    problem = _verify([leaf])
    assert isinstance(problem, VerifyProblem) and problem.alert == ALERT_BAD_CERT, problem
    relaxed = _verify([leaf], ignore_cert_chain=True)
    assert isinstance(relaxed, VerifyProblem) and relaxed.alert == ALERT_BAD_CERT, relaxed


# Was a bug, fixed: the name check, now run on an untrusted leaf, built its reason with
# cert_names(), whose cert.subject raises ValueError on a CN that is not UTF-8 (describe_cert's
# fallback did too); before the multi-fault change this chain was unknown_ca.  Mbed TLS compares
# the raw bytes: NOT_TRUSTED | CN_MISMATCH, bad_certificate.
def test_a_leaf_with_an_unparsable_subject_from_an_unknown_issuer_is_a_problem_not_an_exception():
    builder = (x509.CertificateBuilder().subject_name(_name("QQQQ")).issuer_name(_name("Nobody"))
               .public_key(LEAF_KEY.public_key()).serial_number(7)
               .not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=30)))
    der = builder.sign(OTHER_KEY, hashes.SHA256()).public_bytes(DER).replace(b"QQQQ", b"\xff\xfe\xfd\xfc")
    leaf = x509.load_der_x509_certificate(der)
    problem = _verify([leaf])
    assert isinstance(problem, VerifyProblem) and problem.alert == ALERT_BAD_CERT


# Was a bug, fixed: _build_path skipped a sent certificate already on the path while Mbed TLS
# walks duplicates (each parent is looked for after its child only, so the walk ends): [leaf,
# S x 9] with S self-signed and untrusted is -0x3000 / access_denied in python-mbedtls 2.28.8;
# the emulator said unknown_ca.
def test_a_self_signed_intermediate_sent_nine_times_is_too_long_as_for_mbedtls():
    s_key = _ec()
    s = _cert("S", "S", s_key, s_key, ca=True)
    leaf = _cert("leaf", "S", LEAF_KEY, s_key, san=HOST)
    problem = _verify([leaf] + [s] * 9)
    assert problem is not None and problem.alert == ALERT_ACCESS_DENIED, problem


# --- the continued walk, pinned ----------------------------------------------------------------

def _bad_then_good():
    """leaf <- I (sent, its signature over the leaf fails) <- Root (trusted)."""
    i_key = _ec()
    inter = _cert("I", "Root", i_key, ROOT_KEY, ca=True)
    leaf = _cert("leaf", "I", LEAF_KEY, OTHER_KEY, san=HOST)
    return leaf, inter


def test_a_bad_signature_below_a_trusted_path_is_still_refused_unknown_ca():
    leaf, inter = _bad_then_good()
    problem = _verify([leaf, inter])
    assert problem is not None and problem.alert == ALERT_UNKNOWN_CA
    assert "signature of CN=leaf does not verify with its issuer CN=I" in problem.reason


@pytest.mark.parametrize("flag", ["ignore_invalid_cert_sign", "ignore_cert_chain"])
def test_the_relax_flags_still_accept_that_chain(flag):
    leaf, inter = _bad_then_good()
    assert _verify([leaf, inter], **{flag: True}) is None


def test_multicert_verify_off_still_refuses_the_leafs_own_bad_link():
    leaf, inter = _bad_then_good()
    problem = _verify([leaf, inter], ignore_multicert_chain_verify=True)
    assert problem is not None and problem.alert == ALERT_UNKNOWN_CA


def test_a_cycle_of_sent_cas_past_a_bad_signature_ends():
    a_key, b_key = _ec(), _ec()
    a = _cert("A", "B", a_key, b_key, ca=True)
    b = _cert("B", "A", b_key, a_key, ca=True)
    leaf = _cert("leaf", "A", LEAF_KEY, OTHER_KEY, san=HOST)         # (A did not sign it)
    problem = _verify([leaf, a, b, a, b, a, b])
    assert problem is not None and problem.alert == ALERT_UNKNOWN_CA


def test_a_long_chain_past_a_bad_signature_is_access_denied_not_an_exception():
    keys = [_ec() for _ in range(10)]
    certs, issuer, issuer_key = [], "Root", ROOT_KEY
    for n, key in enumerate(keys):
        certs.append(_cert(f"I{n}", issuer, key, issuer_key, ca=True))
        issuer, issuer_key = f"I{n}", key
    leaf = _cert("leaf", issuer, LEAF_KEY, OTHER_KEY, san=HOST)
    problem = _verify([leaf] + certs[::-1])
    assert problem is not None and problem.alert == ALERT_ACCESS_DENIED
