"""ChainVerifier's Mbed TLS 2.28 rules (VERIFY_REQUIRED), one at a time, on certificates made
here (no network): the leaf's keyUsage per key exchange (ssl_check_cert_usage), its
extendedKeyUsage, an issuer's keyCertSign and pathLenConstraint, the default profile (hash,
RSA size) and x509_name_cmp's letter-case rule.  The end-to-end view (OpenSSL servers, the
host's 566) is tests/e2e/test_adversarial_hostile_servers_2.py."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tls_engine import TlsSettings
from tls_engine.verify import ALERT_UNKNOWN_CA, ALERT_UNSUPPORTED_CERT, ChainVerifier, same_name

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)
ECDHE_RSA = "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
RSA_KX = "TLS_RSA_WITH_AES_128_CBC_SHA"
ECDH_ECDSA = "TLS_ECDH_ECDSA_WITH_AES_128_CBC_SHA"


def _name(cn: str, org: str | None = None, printable: bool = False) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn,
                                x509.name._ASN1Type.PrintableString if printable else x509.name._ASN1Type.UTF8String)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _cert(subject, issuer, issuer_key, key, *, ca: bool, path_length=None, usage=None, eku=None,
          host: str | None = "localhost", sign_hash=None):
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca, path_length if ca else None), critical=True))
    if usage is not None:
        bits = dict(digital_signature=False, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                    encipher_only=False, decipher_only=False)
        bits.update({u: True for u in usage})
        builder = builder.add_extension(x509.KeyUsage(**bits), critical=True)
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    if host:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
    return builder.sign(issuer_key, sign_hash or hashes.SHA256())


@pytest.fixture(scope="module")
def root():
    key = rsa.generate_private_key(65537, 2048)
    name = _name("Rules Root", "rules org")
    return _cert(name, name, key, key, ca=True, host=None), key


def _verify(root_cert, chain, suite=ECDHE_RSA, **settings):
    pem = root_cert.public_bytes(Encoding.PEM)
    values = dict(server_name="localhost", seclevel=1, ca_pem=pem, ca_label="UFS:root.pem",
                  ignore_local_time=False, clock=lambda: NOW)
    values.update(settings)
    verifier = ChainVerifier(TlsSettings(**values), x509.load_pem_x509_certificates(pem))
    return verifier.verify([c.public_bytes(Encoding.DER) for c in chain], suite)


def _leaf(root, **kwargs):
    root_cert, root_key = root
    key = kwargs.pop("key", None) or ec.generate_private_key(ec.SECP256R1())
    return _cert(_name("leaf"), root_cert.subject, root_key, key, ca=False, **kwargs)


@pytest.mark.parametrize("usage, suite, fit", [
    (["digital_signature"], ECDHE_RSA, True),
    (["key_encipherment"], ECDHE_RSA, False),
    (["key_encipherment"], RSA_KX, True),
    (["digital_signature"], RSA_KX, False),
    (["key_agreement"], ECDH_ECDSA, True),
    (["digital_signature"], ECDH_ECDSA, False),
    (["digital_signature"], None, True),          # suite unknown: keyUsage not looked at
])
def test_leaf_key_usage_must_fit_the_key_exchange(root, usage, suite, fit):
    problem = _verify(root[0], [_leaf(root, usage=usage)], suite)
    if fit:
        assert problem is None, problem
    else:
        assert problem is not None and "keyUsage lacks" in problem.reason, problem
        assert problem.alert == ALERT_UNSUPPORTED_CERT          # (ssl_parse_certificate: 43)


@pytest.mark.parametrize("extra", ["encipher_only", "decipher_only"])
def test_encipher_or_decipher_only_fails_any_key_usage_check(root, extra):
    """mbedtls_x509_crt_check_key_usage: a may-only bit nobody asked for fails the check --
    on the leaf (any suite) and on an issuer's keyCertSign."""
    leaf = _leaf(root, usage=["digital_signature", "key_agreement", extra])
    for suite in (ECDHE_RSA, ECDH_ECDSA, None):
        problem = _verify(root[0], [leaf], suite)
        assert problem is not None and problem.alert == ALERT_UNSUPPORTED_CERT, (suite, problem)
    inter, ikey = _intermediate(root, "Inter", usage=("key_cert_sign", "key_agreement", extra))
    leaf = _cert(_name("leaf"), inter.subject, ikey, ec.generate_private_key(ec.SECP256R1()), ca=False)
    assert _verify(root[0], [leaf, inter]) is not None


def test_a_leaf_without_key_usage_fits_any_key_exchange(root):
    for suite in (ECDHE_RSA, RSA_KX, ECDH_ECDSA):
        assert _verify(root[0], [_leaf(root)], suite) is None


@pytest.mark.parametrize("eku, fit", [
    ([ExtendedKeyUsageOID.SERVER_AUTH], True),
    ([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH], True),
    ([ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE], True),
    ([ExtendedKeyUsageOID.CLIENT_AUTH], False),
    ([ExtendedKeyUsageOID.CODE_SIGNING], False),
])
def test_leaf_extended_key_usage_must_allow_a_tls_server(root, eku, fit):
    problem = _verify(root[0], [_leaf(root, eku=eku)])
    assert (problem is None) == fit, problem
    if not fit:
        assert "serverAuth" in problem.reason


def _intermediate(root, name, *, path_length=None, usage=("key_cert_sign", "crl_sign"), parent=None):
    parent_cert, parent_key = parent or root
    key = ec.generate_private_key(ec.SECP256R1())
    return _cert(_name(name), parent_cert.subject, parent_key, key, ca=True, path_length=path_length,
                 usage=list(usage) if usage is not None else None, host=None), key


def test_an_issuer_with_key_usage_needs_key_cert_sign(root):
    for usage, ok in ((("key_cert_sign",), True), (None, True), (("digital_signature", "crl_sign"), False)):
        inter, ikey = _intermediate(root, "Inter", usage=usage)
        leaf = _cert(_name("leaf"), inter.subject, ikey, ec.generate_private_key(ec.SECP256R1()), ca=False)
        problem = _verify(root[0], [leaf, inter])
        assert (problem is None) == ok, (usage, problem)
        if not ok:
            assert problem.alert == ALERT_UNKNOWN_CA and "not signed by" in problem.reason


@pytest.mark.parametrize("length, depth, ok", [
    (0, 1, True),          # root -> I(0) -> leaf: no intermediate under I
    (0, 2, False),         # root -> I(0) -> J -> leaf
    (1, 2, True),
    (1, 3, False),
])
def test_path_length_constraint(root, length, depth, ok):
    top, top_key = _intermediate(root, "I0", path_length=length)
    chain, parent = [top], (top, top_key)
    for i in range(depth - 1):
        inter = _intermediate(root, f"J{i}", parent=parent)
        chain.insert(0, inter[0])
        parent = inter
    leaf = _cert(_name("leaf"), parent[0].subject, parent[1], ec.generate_private_key(ec.SECP256R1()), ca=False)
    problem = _verify(root[0], [leaf, *chain])
    assert (problem is None) == ok, problem


def test_a_self_issued_intermediate_is_not_counted_against_path_length_but_its_own_link_is(root):
    """root (pathLen 0) -> X (self-issued: the root's name, a key of its own, a key rollover)
    -> leaf.  Mbed TLS counts a self-issued certificate after its own issuer search (self_cnt),
    so X's link to the root still counts X: refused.  Without the constraint it chains; and a
    self-issued CA deeper down is not counted against the constraint above it."""
    root_cert, root_key = root
    for length, ok in ((0, False), (None, True)):
        top = _cert(_name("PL Root"), _name("PL Root"), root_key, root_key, ca=True, path_length=length, host=None)
        xkey = ec.generate_private_key(ec.SECP256R1())
        again = _cert(_name("PL Root"), _name("PL Root"), root_key, xkey, ca=True, host=None)
        leaf = _cert(_name("leaf"), again.subject, xkey, ec.generate_private_key(ec.SECP256R1()), ca=False)
        assert (_verify(top, [leaf, again]) is None) == ok, length
    # root (pathLen 1) -> I -> I' (self-issued rollover of I) -> leaf: I' is not counted
    top = _cert(_name("PL1 Root"), _name("PL1 Root"), root_key, root_key, ca=True, path_length=1, host=None)
    ikey, ikey2 = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    inter = _cert(_name("PL I"), top.subject, root_key, ikey, ca=True, host=None)
    rollover = _cert(_name("PL I"), _name("PL I"), ikey, ikey2, ca=True, host=None)
    leaf = _cert(_name("leaf"), rollover.subject, ikey2, ec.generate_private_key(ec.SECP256R1()), ca=False)
    assert _verify(top, [leaf, rollover, inter]) is None


def test_rsa_keys_under_2048_bits_are_refused_on_the_leaf_and_on_issuers(root):
    small = rsa.generate_private_key(65537, 1024)
    problem = _verify(root[0], [_leaf(root, key=small)])
    assert problem is not None and "1024-bit RSA key" in problem.reason
    assert problem.alert == ALERT_UNSUPPORTED_CERT
    root_cert, root_key = root
    inter = _cert(_name("Small Inter"), root_cert.subject, root_key, small, ca=True, host=None)
    leaf = _cert(_name("leaf"), inter.subject, small, ec.generate_private_key(ec.SECP256R1()), ca=False)
    problem = _verify(root_cert, [leaf, inter])
    assert problem is not None and "issuer certificate CN=Small Inter has a 1024-bit RSA key" in problem.reason
    assert _verify(root_cert, [_leaf(root, key=rsa.generate_private_key(65537, 2048))]) is None


def _sha1_leaf(root, tmp_path) -> x509.Certificate:
    """A leaf the root signs with SHA-1 (the openssl command: cryptography no longer does)."""
    import subprocess

    from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

    from emulator.testing.peers.openssl import openssl_binary

    root_cert, root_key = root
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(_name("sha1 leaf")).sign(key, hashes.SHA256())
    (tmp_path / "root.pem").write_bytes(root_cert.public_bytes(Encoding.PEM))
    (tmp_path / "root.key").write_bytes(root_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    (tmp_path / "leaf.csr").write_bytes(csr.public_bytes(Encoding.PEM))
    (tmp_path / "ext.cnf").write_text("subjectAltName=DNS:localhost\nbasicConstraints=critical,CA:FALSE\n")
    subprocess.run([openssl_binary(), "x509", "-req", "-in", str(tmp_path / "leaf.csr"), "-CA",
                    str(tmp_path / "root.pem"), "-CAkey", str(tmp_path / "root.key"), "-set_serial", "7",
                    "-out", str(tmp_path / "leaf.pem"), "-days", "3650", "-sha1", "-extfile",
                    str(tmp_path / "ext.cnf")], check=True, capture_output=True)
    leaf = x509.load_pem_x509_certificate((tmp_path / "leaf.pem").read_bytes())
    assert leaf.signature_hash_algorithm.name == "sha1"
    return leaf


def test_a_sha1_signature_is_refused_by_name_and_not_waived_by_ignoreinvalidcertsign(root, tmp_path):
    leaf = _sha1_leaf(root, tmp_path)
    for relax in (False, True):
        problem = _verify(root[0], [leaf], ignore_invalid_cert_sign=relax, ignore_local_time=True)
        assert problem is not None and "signed with SHA1" in problem.reason, problem


def test_a_pinned_sha1_leaf_is_refused_a_pinned_sha256_one_is_not(tmp_path):
    """A self-signed leaf that is itself in the CA file: Mbed TLS judges its hash before its
    'locally trusted end entity' return."""
    import subprocess

    from emulator.testing.peers.openssl import openssl_binary

    for digest, ok in (("-sha1", False), ("-sha256", True)):
        subprocess.run([openssl_binary(), "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", digest, "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                        "-days", "3650", "-keyout", str(tmp_path / "p.key"), "-out", str(tmp_path / "p.pem")],
                       check=True, capture_output=True)
        pinned = x509.load_pem_x509_certificate((tmp_path / "p.pem").read_bytes())
        problem = _verify(pinned, [pinned], ignore_local_time=True)
        assert (problem is None) == ok, (digest, problem)


def test_a_sha1_root_itself_is_fine(tmp_path):
    """The anchor's own signature is not judged (Mbed TLS stops at a trusted root)."""
    import subprocess

    from emulator.testing.peers.openssl import openssl_binary

    subprocess.run([openssl_binary(), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha1", "-subj",
                    "/CN=SHA1 Root", "-days", "3650", "-keyout", str(tmp_path / "r.key"), "-out",
                    str(tmp_path / "r.pem")], check=True, capture_output=True)
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    root_cert = x509.load_pem_x509_certificate((tmp_path / "r.pem").read_bytes())
    root_key = load_pem_private_key((tmp_path / "r.key").read_bytes(), None)
    assert root_cert.signature_hash_algorithm.name == "sha1"
    leaf = _cert(_name("leaf"), root_cert.subject, root_key, ec.generate_private_key(ec.SECP256R1()), ca=False)
    assert _verify(root_cert, [leaf], ignore_local_time=True) is None


def test_names_match_as_mbedtls_compares_them():
    assert same_name(_name("Odd Root", "odd org"), _name("ODD ROOT", "Odd Org"))
    assert same_name(_name("odd root", printable=True), _name("ODD ROOT"))   # Printable vs UTF8
    assert not same_name(_name("Odd Root"), _name("Odd Roots"))
    assert not same_name(_name("Odd Root", "odd org"), _name("Odd Root"))
    ia5 = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ODD ROOT", x509.name._ASN1Type.IA5String)])
    assert not same_name(_name("odd root"), ia5)       # IA5String: no case folding in Mbed TLS
    assert not same_name(_name("ODD ROOT"), ia5)       # nor the same value in another type
    assert same_name(ia5, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ODD ROOT",
                                                        x509.name._ASN1Type.IA5String)]))
    assert same_name(_name("Ümlaut"), _name("Ümlaut"))
    assert not same_name(_name("ümlaut"), _name("Ümlaut"))    # only ASCII letters fold


def test_a_leaf_whose_issuer_differs_only_in_case_chains(root):
    root_cert, root_key = root
    leaf = _cert(_name("leaf"), _name("RULES ROOT", "RULES ORG"), root_key,
                 ec.generate_private_key(ec.SECP256R1()), ca=False)
    assert _verify(root_cert, [leaf]) is None
