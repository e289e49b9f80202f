"""Tests from a manual mutation-testing pass over the server-certificate policy and the
SSL-context -> Mbed TLS configuration: tls_engine/verify.py (anchors, modem clock, path
building, issuer choice, profile, key usage, names), tls_engine/config.py (versions, suites,
PSK, ALPN, SNI, client pair, caches) and tls_engine/ciphers.py.  Each test pins a behaviour
a small change (the mutant named in its docstring) left the existing tests passing on; the
expected values come from the module docstrings, tls_engine/README.md, docs/behaviour.md
("Certificate checks", the sslversion / ciphersuite / psk / alpn rows) and Mbed TLS 2.28's
rules (x509_crt_verify_chain, x509_crt_find_parent_in, ssl_check_cert_usage,
x509_memcasecmp, x509_check_wildcard; RFC 5280 4.1.2.5 for the validity bounds), not from
the emulator's output.  Sans-IO only: ChainVerifier, build_plan and the cipher table, with
certificates made here (EC P-256 keys; RSA only where the rule is about RSA).

Existing tests run on each mutant: tests/unit/tls_engine/ (test_verify_differential,
_mbedtls_rules, _policy, test_config_and_names, test_config_cache, test_handshake, test_dtls)
then tests/e2e/test_ssl_options_verify, test_adversarial_tls_options, test_ssl_ec2x,
test_ssl_profiles, test_ssl_options_wire (v01-v17, c01-c06 also test_adversarial_cert_material,
test_adversarial_dtls_cert_review, test_adversarial_hostile_servers_2).

Mutants applied: 70 in verify.py, 42 in config.py, 10 in ciphers.py (122).  Killed by
existing tests (51), equivalent (4), killed by the new tests (62), not killed (5).
Killed by existing tests:
- verify (41): load_anchors without its PEM check; anchors handed out uncopied; no empty-chain
  check; ignore_cert_chain building the path anyway; the profile told the top is always
  the leaf's RSA size unchecked; verify_hostname=False still
  checking the name; a trusted leaf taken without being self-issued; the 10-certificate
  depth as 11 / 9; ignore_multicert not ending at the leaf's issuer; the search not after
  the child; `below` one more; pathLen `<=`; ignore_invalid_cert_sign relaxing nothing; a sent
  candidate with a bad signature passed over; no out-of-date preference; no bad-signature
  reason; no SHA-1 signature fallback; the expiry alert 46; only the leaf's dates; a sent v1
  certificate a CA; keyCertSign not asked of issuers; unknown NON-critical extensions refused;
  a critical anyPolicy refused; names of other lengths compared; a BMP/IA5 value folded when
  one side is; 'A' not a letter; "*." and ".test" wildcards; a wildcard from the last dot
  (differential); only the first CN; may-only bits allowed; a pinned SHA-1 leaf; the anchor's
  RSA size unchecked; SHA-224 refused; the name-mismatch alert; the path alert 42; the
  usage alert 46; an RSA fallback signature always good; an IP with no SAN never matching a
  CN; anyExtendedKeyUsage refused.
- config (10): SSL 3.0 not refused (BAD_CONFIG instead of UNSUPPORTED_VERSION); sslversion 4
  from TLS 1.1; TLS 1.0/1.1 swapped; pinned versions with a TLS 1.0 minimum; DTLS 1.0 and
  1.2 as ranges; an RC4-only list without native not refused; validate_certificates=True;
  the key log out of the context key; native suites not applied.
Equivalent:
- verify `used.add(...)` dropped (v18): the search for a parent only looks after the child
  (`after`), so a certificate already on the path can come back only as a byte-identical
  copy sent later, which has the same name, so it fits only a self-issued CA, whose path
  fails either way.
- config: the unknown-id check dropped (c13: with native, the id reaches set_ciphersuites,
  which refuses it: unsupported_cipher all the same); `entry[0] is plan.configuration`
  dropped (c37: an entry holds its configuration, so the id() in its key cannot be reused
  while the entry lives); the "is empty" client-material check dropped (c41: empty PEM
  fails to parse, bad_config all the same).
Not killed (no test written):
- v07 `_profile_problem(path, True)`: differs only with ignore_multicert_chain_verify and an
  intermediate signed with SHA-1 by its (unverified) issuer -- the README says the
  certificates above the leaf's issuer "are not verified" and that the profile applies
  "under the anchor"; which of the two applies to that issuer's own signature is not
  specified, so no expected value.
- v25 an out-of-date sent issuer whose signature fails taken as the parent: 566 either way;
  only which of the two faults is reported changes (unknown_ca + "does not verify" vs
  certificate_expired + "expired").  NOTE: Mbed TLS reports both flags and its alert
  precedence (CN_MISMATCH > usage/key > EXPIRED > NOT_TRUSTED > other) picks
  certificate_expired there; ChainVerifier.verify returns the FIRST fault in its own order
  (path, key/usage, dates, name), so with several faults its alert can differ from Mbed
  TLS's (e.g. an untrusted chain with a wrong name: 48 here, 42 from Mbed TLS) -- not pinned,
  as the host sees 566 / -1 either way.
- c15 (native unavailable: PSK suites not appended to a partly RC4 list), c36
  (renegotiation out of the context key), c39 (a key log alone not making apply_native_conf
  run): the existing suite was not run in full on them for lack of time.
Killed by the new tests below (62): verify (26) -- the anchor cache bound; a naive modem
clock; check_dates_of ignoring ignore_local_time; check_usage without the suite; the leaf
counted as self-issued (pathLen); the LAST out-of-date candidate taken; ignore_local_time
still preferring an in-date issuer; the not-yet-valid alert 45; notAfter / notBefore
exclusive; v1 anchors refused; Netscape cert type not parsed; BMPString folded; 'z' and any
0x20 pair folded; an IP matching a dNSName; non-CN attributes as names; RSA_PSK, DHE_RSA,
ECDHE_ECDSA, ECDH_RSA dropped from their keyUsage rows; 2047-bit RSA accepted; the issuer
BAD_KEY alert 46; suite None asking digitalSignature; sent positions counted per slice;
"[::1]" not an IP literal.  config and ciphers (36; the existing suite not run on them):
PSK families DHE/ECDHE left out, PSK suites with no PSK / none with one / added to explicit
lists; 0XFFFF an id; PSK suites dropped with native; a PSK key or identity alone; ALPN 255 /
empty / 8 names / NUL; SNI without sni=1 or for an IP; psk_key, psk_identity, alpn,
dtls_version, the client key out of _config_key; seclevel 3 and sslversion 5 accepted; half
a client pair; the pair read at seclevel 1; the key/certificate match dropped; the cache
bound; every id offerable with native; no library fallback for names or ids; describe() in
lower case; the table code unpadded; a partial '_' -> '-' mapping; RC4/3DES never in the
default offer; the default offer reversed; non-table suites unavailable / offerable only
through native.  No bug in the current code was found (see the v25 note on alerts)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from tests.unit.tls_engine.der_support import children, contents, element
from tls_engine import TlsSettings
from tls_engine import verify
from tls_engine.verify import (ALERT_BAD_CERT, ALERT_CERT_EXPIRED, ALERT_CERT_UNKNOWN, ALERT_UNKNOWN_CA,
                               ALERT_UNSUPPORTED_CERT, ChainVerifier)

NOW = datetime(2026, 6, 1, 12, 0, 0, tzinfo=timezone.utc)
HOST = "svc.example.test"
ECDHE_RSA = "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
ECDHE_ECDSA = "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"
DHE_RSA = "TLS_DHE_RSA_WITH_AES_128_CBC_SHA"
RSA_PSK = "TLS_RSA_PSK_WITH_AES_128_CBC_SHA"
ECDH_RSA = "TLS_ECDH_RSA_WITH_AES_128_CBC_SHA"
ECDH_ECDSA = "TLS_ECDH_ECDSA_WITH_AES_128_CBC_SHA"
RSA_KX = "TLS_RSA_WITH_AES_128_CBC_SHA"
_UTF8 = x509.name._ASN1Type.UTF8String


# --- certificates (EC P-256 keys unless a test needs RSA: fast) ----------------------------

def _ec():
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str, **extra) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn, _UTF8)]
    for oid, value in extra.items():
        attrs.append(x509.NameAttribute(getattr(NameOID, oid), value, _UTF8))
    return x509.Name(attrs)


_USAGE_OFF = dict(digital_signature=False, content_commitment=False, key_encipherment=False,
                  data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                  encipher_only=False, decipher_only=False)


def _cert(subject: x509.Name, issuer: tuple | None, key=None, *, ca=False, path_length=None,
          usage=None, san=(HOST,), not_before=None, not_after=None, sign_key=None, sign_hash=None,
          issuer_name: x509.Name | None = None, extensions=True):
    """(certificate, key).  issuer: (certificate, key) or None (self-signed)."""
    key = key or _ec()
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(issuer_name or (issuer[0].subject if issuer else subject))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(not_before or NOW - timedelta(days=10))
               .not_valid_after(not_after or NOW + timedelta(days=10)))
    if extensions:
        builder = builder.add_extension(x509.BasicConstraints(ca, path_length if ca else None), critical=True)
    if usage is not None:
        builder = builder.add_extension(x509.KeyUsage(**{**_USAGE_OFF, **{u: True for u in usage}}), critical=True)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(__import__("ipaddress").ip_address(n)) if n[0].isdigit() or ":" in n
             else x509.DNSName(n) for n in san]), critical=False)
    signer = sign_key or (issuer[1] if issuer else key)
    return builder.sign(signer, sign_hash or hashes.SHA256()), key


def _root(cn="Mut12 Root", **kwargs):
    return _cert(_name(cn), None, ca=True, san=(), usage=("key_cert_sign", "crl_sign"), **kwargs)


def _der(cert) -> bytes:
    return cert.public_bytes(Encoding.DER)


def _settings(anchors, **overrides) -> TlsSettings:
    values = dict(server_name=HOST, seclevel=1, ca_pem=b"".join(a.public_bytes(Encoding.PEM) for a in anchors),
                  ca_label="UFS:mut12.pem", ignore_local_time=False, clock=lambda: NOW)
    values.update(overrides)
    return TlsSettings(**values)


def _verify(anchors, chain, suite=ECDHE_RSA, **overrides):
    """ChainVerifier's verdict on the chain (certificates; leaf first) against the anchors."""
    return ChainVerifier(_settings(anchors, **overrides), list(anchors)).verify([_der(c) for c in chain], suite)


@pytest.fixture(scope="module")
def root():
    return _root()


# --- verify.py: trust anchors, the modem clock ---------------------------------------------

def test_parsed_anchor_cache_stays_within_its_bound(root):
    """load_anchors keeps at most _ANCHORS_MAX parsed CA files, dropping the oldest (mutant:
    `len(_ANCHORS) > _ANCHORS_MAX`, one more than the bound)."""
    pem = root[0].public_bytes(Encoding.PEM)
    for extra in range(verify._ANCHORS_MAX + 3):
        anchors = verify.load_anchors(_settings([root[0]], ca_pem=pem + b"\n" * (extra + 1)))
        assert anchors == [root[0]]
    assert len(verify._ANCHORS) <= verify._ANCHORS_MAX


def test_a_naive_modem_clock_is_taken_as_utc(root):
    """settings.clock may return a naive datetime: it is UTC (mutant: the naive moment kept,
    which cannot be compared with a certificate's aware dates)."""
    leaf = _cert(_name("leaf"), root, not_after=NOW + timedelta(hours=1))[0]
    naive = NOW.replace(tzinfo=None)
    assert _verify([root[0]], [leaf], clock=lambda: naive) is None
    late = naive + timedelta(hours=2)
    problem = _verify([root[0]], [leaf], clock=lambda: late)
    assert problem is not None and problem.alert == ALERT_CERT_EXPIRED, problem


@pytest.mark.parametrize("moment, alert", [
    (NOW + timedelta(days=10), None),                             # exactly notAfter: still valid
    (NOW + timedelta(days=10, seconds=1), ALERT_CERT_EXPIRED),
    (NOW - timedelta(days=10), None),                             # exactly notBefore: valid
    (NOW - timedelta(days=10, seconds=1), ALERT_CERT_UNKNOWN),    # not yet valid (FUTURE)
])
def test_validity_period_bounds_are_inclusive(root, moment, alert):
    """RFC 5280 4.1.2.5 (and Mbed TLS's x509_time_is_past / is_future, strict comparisons): a
    certificate is valid from notBefore THROUGH notAfter, both included (mutants: `>=` for
    notAfter, `<=` for notBefore)."""
    leaf = _cert(_name("leaf"), root, not_before=NOW - timedelta(days=10), not_after=NOW + timedelta(days=10))[0]
    problem = _verify([root[0]], [leaf], clock=lambda: moment)
    assert (problem and problem.alert) == alert, problem


def test_check_dates_of_honours_ignore_local_time(root):
    """ChainVerifier.check_dates_of (the DTLS leaf's dates): nothing when ignore_local_time
    (mutant: dates checked anyway), the expiry at the modem clock otherwise."""
    leaf = _cert(_name("leaf"), root, not_after=NOW - timedelta(days=1))[0]
    relaxed = ChainVerifier(_settings([root[0]], ignore_local_time=True), [root[0]])
    assert relaxed.check_dates_of(_der(leaf)) is None
    strict = ChainVerifier(_settings([root[0]]), [root[0]])
    problem = strict.check_dates_of(_der(leaf))
    assert problem is not None and problem.alert == ALERT_CERT_EXPIRED, problem


def test_check_usage_judges_the_leaf_for_the_negotiated_suite(root):
    """ChainVerifier.check_usage: keyUsage keyEncipherment only fits an RSA key exchange,
    not ECDHE_RSA (mutant: the suite not passed on, so no keyUsage bit asked for)."""
    leaf = _cert(_name("leaf"), root, usage=("key_encipherment",))[0]
    verifier = ChainVerifier(_settings([root[0]]), [root[0]])
    assert verifier.check_usage(_der(leaf), RSA_KX) is None
    problem = verifier.check_usage(_der(leaf), ECDHE_RSA)
    assert problem is not None and problem.alert == ALERT_UNSUPPORTED_CERT, problem


# --- verify.py: key usage per key exchange (Mbed TLS ssl_check_cert_usage) --------------------

@pytest.mark.parametrize("suite, fit, unfit", [
    (RSA_PSK, "key_encipherment", "digital_signature"),
    (DHE_RSA, "digital_signature", "key_encipherment"),
    (ECDHE_ECDSA, "digital_signature", "key_agreement"),
    (ECDH_RSA, "key_agreement", "digital_signature"),
])
def test_leaf_key_usage_per_key_exchange(root, suite, fit, unfit):
    """ssl_check_cert_usage: RSA and RSA_PSK need keyEncipherment; DHE_RSA, ECDHE_RSA and
    ECDHE_ECDSA digitalSignature; ECDH_RSA and ECDH_ECDSA keyAgreement (mutants: one key
    exchange dropped from its row)."""
    good = _cert(_name("leaf"), root, usage=(fit,))[0]
    bad = _cert(_name("leaf"), root, usage=(unfit,))[0]
    assert _verify([root[0]], [good], suite) is None
    problem = _verify([root[0]], [bad], suite)
    assert problem is not None and problem.alert == ALERT_UNSUPPORTED_CERT and fit in problem.reason, problem


def test_an_unknown_suite_asks_no_key_usage_bit(root):
    """suite None: "the leaf's keyUsage is not looked at" (only the may-only bits, which fail
    any check) -- a keyEncipherment-only leaf passes (mutant: None asks digitalSignature)."""
    leaf = _cert(_name("leaf"), root, usage=("key_encipherment",))[0]
    assert _verify([root[0]], [leaf], None) is None


# --- verify.py: the path -----------------------------------------------------------------------

def _version1(cert: x509.Certificate, signer) -> x509.Certificate:
    """cert (made without extensions) as a version-1 certificate: the TBS without its
    version field, signed again by signer (an EC key, as cert's issuer's)."""
    kept = [field for field in children(contents(cert.tbs_certificate_bytes))
            if field[0] not in (0xA0, 0xA3)]                # [0] version, [3] extensions
    new_tbs = element(0x30, b"".join(kept))
    _, algorithm, _ = children(contents(_der(cert)))
    signature = signer.sign(new_tbs, ec.ECDSA(hashes.SHA256()))
    v1 = x509.load_der_x509_certificate(element(0x30, new_tbs + algorithm + element(0x03, b"\0" + signature)))
    assert v1.version == x509.Version.v1
    return v1


def test_a_version1_trust_anchor_is_a_ca():
    """A v1 certificate has no basicConstraints; Mbed TLS waives the CA bit for a locally
    trusted one (x509_crt_check_parent, need_ca_bit = !(top && version < 3)), and so does the
    policy ("v1/v2 anchors are accepted as Mbed TLS does"; mutant: no v1 certificate is a CA)."""
    made, key = _cert(_name("Mut12 V1 Root"), None, san=(), extensions=False)
    v1_root = _version1(made, key)
    leaf = _cert(_name("leaf"), (v1_root, key))[0]
    assert _verify([v1_root], [leaf]) is None
    # ... but the same v1 certificate sent by the server is not a CA (the anchor another one)
    other = _root("Mut12 Other Root")
    made, v1_key = _cert(_name("Mut12 V1 Inter"), other, san=(), extensions=False)
    v1_inter = _version1(made, other[1])
    leaf = _cert(_name("leaf"), (v1_inter, v1_key))[0]
    problem = _verify([other[0]], [leaf, v1_inter])
    assert problem is not None and problem.alert == ALERT_UNKNOWN_CA, problem


def test_an_issuer_is_looked_for_only_after_its_child_in_the_sent_list(root):
    """Mbed TLS (x509_crt_find_parent_in) looks for a parent among the certificates sent after
    the child.  leaf <- I1 <- I2 <- I3 <- root sent as [leaf, Y, I1, I3, I2]: I3 comes before
    I2, so I2 has no parent and the path fails (mutant: the sent positions counted from the
    start of the slice searched, so I3 was found before I2)."""
    i3 = _cert(_name("Mut12 I3"), root, ca=True, san=())
    i2 = _cert(_name("Mut12 I2"), i3, ca=True, san=())
    i1 = _cert(_name("Mut12 I1"), i2, ca=True, san=())
    leaf = _cert(_name("leaf"), i1)[0]
    unrelated = _cert(_name("Mut12 Y"), None, ca=True, san=())[0]
    assert _verify([root[0]], [leaf, unrelated, i1[0], i2[0], i3[0]]) is None
    problem = _verify([root[0]], [leaf, unrelated, i1[0], i3[0], i2[0]])
    assert problem is not None and problem.alert == ALERT_UNKNOWN_CA, problem


def test_a_self_issued_leaf_is_not_exempt_from_path_length():
    """pathLenConstraint does not count self-issued INTERMEDIATES (Mbed TLS's self_cnt, which
    skips the leaf: `ver_chain->len != 1`).  A leaf whose subject is its issuer's name is still
    one certificate under the root: root (pathLen 0) -> I "X" -> leaf "X" has one
    intermediate, which pathLen 0 forbids (mutant: the leaf counted as self-issued)."""
    root = _cert(_name("Mut12 Len0 Root"), None, ca=True, path_length=0, san=())
    inter = _cert(_name("X"), root, ca=True, san=())
    leaf = _cert(_name("X"), inter)[0]
    problem = _verify([root[0]], [leaf, inter[0]])
    assert problem is not None and problem.alert == ALERT_UNKNOWN_CA, problem
    # the same chain under a root with pathLen 1 passes
    root1 = _cert(_name("Mut12 Len1 Root"), None, ca=True, path_length=1, san=())
    inter1 = _cert(_name("X"), root1, ca=True, san=())
    assert _verify([root1[0]], [_cert(_name("X"), inter1)[0], inter1[0]]) is None

def test_with_ignore_local_time_an_expired_issuer_is_not_passed_over(root):
    """ignorelocaltime=1: "dates are not looked at, nothing else changes" -- also not in the
    choice between two same-name issuers: the first sent one that fits is the parent (here
    the real issuer, expired at the modem clock), not a later one with another key (mutant:
    the modem clock read anyway, the expired issuer passed over for the impostor)."""
    name = _name("Mut12 Inter")
    key = _ec()
    real = _cert(name, root, key, ca=True, san=(), not_after=NOW - timedelta(days=1))[0]
    impostor = _cert(name, root, ca=True, san=())[0]
    leaf = _cert(_name("leaf"), (real, key))[0]
    assert _verify([root[0]], [leaf, real, impostor], ignore_local_time=True) is None


def test_of_two_out_of_date_issuers_the_first_sent_is_the_parent(root):
    """Mbed TLS keeps the FIRST candidate that is out of date as its fallback parent; here it
    is the real issuer (its signature verifies), so the fault is its date: certificate_expired
    (mutant: the last out-of-date candidate, an impostor whose signature fails -> unknown_ca)."""
    name = _name("Mut12 Inter")
    key = _ec()
    real = _cert(name, root, key, ca=True, san=(), not_after=NOW - timedelta(days=1))[0]
    impostor = _cert(name, root, ca=True, san=(), not_after=NOW - timedelta(days=2))[0]
    leaf = _cert(_name("leaf"), (real, key))[0]
    problem = _verify([root[0]], [leaf, real, impostor])
    assert problem is not None and problem.alert == ALERT_CERT_EXPIRED and "expired" in problem.reason, problem


def test_a_signature_checked_without_cryptographys_name_rule_still_has_to_verify():
    """When the issuer name matches only as Mbed TLS compares names (ASCII case), cryptography's
    verify_directly_issued_by refuses and the signature is checked directly: an RSA issuer's
    signature must still verify (mutant: any RSA-signed child taken as signed)."""
    root_key = rsa.generate_private_key(65537, 2048)
    root_cert = _cert(_name("Mut12 RSA Root"), None, root_key, ca=True, san=())[0]
    upper = _name("MUT12 RSA ROOT")
    good = _cert(_name("leaf"), (root_cert, root_key), issuer_name=upper)[0]
    assert _verify([root_cert], [good]) is None
    forged = _cert(_name("leaf"), (root_cert, root_key), issuer_name=upper,
                   sign_key=rsa.generate_private_key(65537, 2048))[0]
    problem = _verify([root_cert], [forged])
    assert problem is not None and problem.alert == ALERT_UNKNOWN_CA and "does not verify" in problem.reason, problem


def test_an_rsa_key_one_bit_short_of_2048_is_refused(root):
    """Mbed TLS's default profile: RSA keys of at least 2048 bits (x509_profile_check_key:
    bitlen >= rsa_min_bitlen); 2047 is refused, with unsupported_certificate (BAD_KEY)."""
    leaf = _cert(_name("leaf"), root, rsa.generate_private_key(65537, 2047))[0]
    problem = _verify([root[0]], [leaf])
    assert problem is not None and problem.alert == ALERT_UNSUPPORTED_CERT and "2047-bit" in problem.reason, problem


def test_alerts_for_a_weak_issuer_key_and_a_wrong_name(root):
    """The alert Mbed TLS would send: BAD_KEY on an issuer -> unsupported_certificate (43);
    CN_MISMATCH -> bad_certificate (42) (mutants: certificate_unknown for either)."""
    weak_key = rsa.generate_private_key(65537, 1024)
    inter = _cert(_name("Mut12 Weak Inter"), root, weak_key, ca=True, san=())
    leaf = _cert(_name("leaf"), inter)[0]
    problem = _verify([root[0]], [leaf, inter[0]])
    assert problem is not None and problem.alert == ALERT_UNSUPPORTED_CERT and "1024-bit" in problem.reason, problem
    other = _cert(_name("leaf"), root, san=("other.example.test",))[0]
    problem = _verify([root[0]], [other])
    assert problem is not None and problem.alert == ALERT_BAD_CERT, problem


# --- verify.py: names ----------------------------------------------------------------------------

@pytest.mark.parametrize("a, b, same", [
    ("Root A", "root a", True), ("Root Z", "ROOT z", True), ("root z", "ROOT Z", True),
    ("Root @", "Root `", False),       # 0x40 / 0x60 differ by 32 but are not letters
    ("Root [", "Root {", False),       # 0x5B / 0x7B
])
def test_only_ascii_letters_fold_in_names(a, b, same):
    """x509_memcasecmp: bytes equal, or differing by 0x20 when both are ASCII letters (A-Z,
    a-z; mutants: the letter ranges one short, or any pair differing by 0x20)."""
    assert verify.same_name(_name(a), _name(b)) is same
    assert verify.dns_name_matches(a.replace(" ", "."), b.replace(" ", ".")) is same


def test_bmpstring_values_do_not_fold_case():
    """x509_name_cmp folds ASCII case only when both values are UTF8String or PrintableString;
    two BMPStrings differing in case are different names (mutant: BMPString folded too)."""
    bmp = x509.name._ASN1Type.BMPString

    def name(text):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text, bmp)])
    assert verify.same_name(name("Mut12 Root"), name("Mut12 Root"))
    assert not verify.same_name(name("Mut12 Root"), name("MUT12 ROOT"))


def test_a_critical_netscape_cert_type_is_an_extension_mbedtls_parses(root):
    """Mbed TLS 2.28 parses the Netscape certificate type (x509_get_crt_ext, ns_cert_type): a
    critical one does not make the certificate unparsable (mutant: taken for an unknown
    critical extension)."""
    key = _ec()
    leaf = (x509.CertificateBuilder().subject_name(_name("leaf")).issuer_name(root[0].subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=1))
            .add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier("2.16.840.1.113730.1.1"),
                                                      bytes.fromhex("03020640")), critical=True)   # SSL server
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
            .sign(root[1], hashes.SHA256()))
    assert _verify([root[0]], [leaf]) is None

def test_a_wildcard_covers_the_hosts_first_label_only():
    """x509_check_wildcard compares the pattern after '*' with the host from its FIRST dot
    (mutant: from its last dot, so "*.test" covered a.b.test)."""
    assert verify.dns_name_matches("*.test", "b.test")
    assert not verify.dns_name_matches("*.test", "a.b.test")


def test_an_ip_literal_is_matched_against_ip_san_entries_only():
    """A dialled IP literal needs an iPAddress SAN entry; a dNSName entry spelling the address
    is not one (mutant: dNSName entries tried as well)."""
    cert = _cert(_name("leaf"), None, san=("127.0.0.1",))[0]
    dns_spelling = (x509.CertificateBuilder().subject_name(_name("leaf")).issuer_name(_name("leaf"))
                    .public_key(_ec().public_key()).serial_number(1)
                    .not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=1))
                    .add_extension(x509.SubjectAlternativeName([x509.DNSName("127.0.0.1")]), critical=False)
                    .sign(_ec(), hashes.SHA256()))
    assert verify.matches_host(cert, "127.0.0.1")
    assert not verify.matches_host(dns_spelling, "127.0.0.1")


def test_without_a_san_only_common_name_attributes_are_names():
    """No SAN: the host is matched against the subject's CN attributes, not its other
    attributes (mutant: every attribute value of the subject)."""
    cert = _cert(_name("other.example.test", ORGANIZATION_NAME=HOST), None, san=())[0]
    assert not verify.matches_host(cert, HOST)
    assert verify.matches_host(cert, "other.example.test")


def test_a_bracketed_ipv6_literal_is_an_ip_literal():
    """parse_ip takes "[::1]" (the URL spelling) as ::1: it matches an iPAddress SAN ::1 and
    is never sent as SNI (mutant: brackets not stripped, so it is taken for a host name)."""
    from tls_engine import config

    cert = _cert(_name("leaf"), None, san=("::1",))[0]
    assert verify.matches_host(cert, "[::1]")
    plan = config.build_plan(TlsSettings(server_name="[::1]", sni=True))
    assert plan.sni_hostname is None
    assert config.build_plan(TlsSettings(server_name=HOST, sni=True)).sni_hostname == HOST


# --- config.py: versions, suites, PSK, ALPN, the caches -----------------------------------------

def _plan(**overrides):
    from tls_engine import config

    return config.build_plan(TlsSettings(**{"server_name": HOST, **overrides}))


def _config_error(**overrides):
    from tls_engine.errors import EngineConfigError

    with pytest.raises(EngineConfigError) as info:
        _plan(**overrides)
    return info.value


def _offered(plan) -> list[str]:
    """The IANA names the plan offers (through native's exact id list, or the wrapper's names)."""
    from tls_engine import ciphers as cs

    if plan.native_suites is not None:
        return [cs.suite_name(i) for i in plan.native_suites]
    return [cs.iana_name_for(n) for n in plan.configuration.ciphers]


@pytest.mark.parametrize("ssl_version, lowest, highest", [
    (1, "TLSv1", "TLSv1"), (2, "TLSv1_1", "TLSv1_1"), (3, "TLSv1_2", "TLSv1_2"), (4, "TLSv1", "TLSv1_2")])
def test_sslversion_bounds(ssl_version, lowest, highest):
    """sslversion 1/2/3: min = max = TLS 1.0 / 1.1 / 1.2; 4: TLS 1.0 through 1.2 (docs/behaviour.md
    sslversion row; mutants: 4 from TLS 1.1, 1 and 2 swapped, a pinned version's minimum
    TLS 1.0)."""
    configuration = _plan(ssl_version=ssl_version).configuration
    assert configuration.lowest_supported_version.name == lowest
    assert configuration.highest_supported_version.name == highest


@pytest.mark.parametrize("dtls_version, expected", [(0, "DTLSv1_0"), (1, "DTLSv1_2")])
def test_dtlsversion_pins_that_version(dtls_version, expected):
    """dtlsversion 0 = DTLS 1.0, 1 = DTLS 1.2, each alone (mutants: a range instead)."""
    configuration = _plan(dtls=True, dtls_version=dtls_version).configuration
    assert configuration.lowest_supported_version.name == expected
    assert configuration.highest_supported_version.name == expected


@pytest.mark.parametrize("value", [5, -1])
def test_other_sslversion_or_seclevel_values_are_bad_config(value):
    """sslversion is 0-4 and seclevel 0-2 (mutants: 5 taken as "all", seclevel 3 accepted)."""
    from tls_engine.errors import BAD_CONFIG

    assert _config_error(ssl_version=value).kind == BAD_CONFIG
    assert _config_error(seclevel=value if value < 0 else 3).kind == BAD_CONFIG


def test_0xffff_is_the_table_default():
    """ciphersuite 0XFFFF = the profile's table in the note's order, the same offer as no list
    (mutant: 0XFFFF taken as an id of its own)."""
    from tls_engine import ciphers as cs

    offered = _offered(_plan(cipher_suites=(cs.ALL_SUITES_CODE,)))
    assert offered == _offered(_plan()) == [cs.suite_name(i) for i in cs.default_offer()]


def test_a_psk_adds_the_librarys_psk_suites_to_the_table_default_only():
    """With a PSK, the table default is followed by the library's PSK suites (plain, DHE and
    ECDHE PSK); without one, none; an explicit list is offered exactly as configured (mutants:
    PSK suites without a PSK, none with one, a family left out, added to explicit lists)."""
    psk = dict(psk_identity=b"modem", psk_key=b"0123456789abcdef")
    table = _offered(_plan())
    assert not [n for n in table if "PSK" in n]
    with_psk = _offered(_plan(**psk))
    assert with_psk[:len(table)] == table
    extra = with_psk[len(table):]
    for family in ("TLS_PSK_WITH_", "TLS_DHE_PSK_WITH_", "TLS_ECDHE_PSK_WITH_"):
        assert any(n.startswith(family) for n in extra), (family, extra)
    assert _offered(_plan(cipher_suites=(0xC02F, 0x0035), **psk)) == [
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_RSA_WITH_AES_256_CBC_SHA"]


def test_a_psk_key_alone_is_a_psk_and_an_identity_alone_is_refused():
    """A key with no identity is a PSK with an empty identity; an identity with no key is a PSK
    with an empty key: bad_config (mutant: either half alone taken as no PSK at all)."""
    from tls_engine.errors import BAD_CONFIG

    assert _plan(psk_key=b"k3y").configuration.pre_shared_key is not None
    error = _config_error(psk_identity=b"modem")
    assert error.kind == BAD_CONFIG and "empty key" in error.reason


@pytest.mark.parametrize("names, ok", [
    (("a" * 255,), True), (("a" * 256,), False), (("",), False),
    (tuple(f"p{i}" for i in range(8)), True), (("h2\0x",), False)])
def test_alpn_name_bounds(names, ok):
    """RFC 7301: a protocol name is 1-255 bytes; the wrapper takes 8 names; a NUL would cut the
    C string (mutants: 255 refused, an empty name accepted, 8 names refused, NUL accepted)."""
    if ok:
        assert _plan(alpn=names).configuration.inner_protocols == tuple(n.encode() for n in names)
    else:
        assert _config_error(alpn=names).kind == "bad_config"


def test_sni_only_when_enabled_and_never_an_ip_literal():
    """SNI carries the dialled name only with sni=1, and never an IP literal (RFC 6066)."""
    assert _plan(sni=False).sni_hostname is None
    assert _plan(sni=True).sni_hostname == HOST
    assert _plan(server_name="192.0.2.7", sni=True).sni_hostname is None


@pytest.mark.parametrize("field, first, second", [
    ("psk_key", b"key-one", b"key-two"), ("psk_identity", b"id-one", b"id-two"),
    ("alpn", ("h2",), ("http/1.1",)), ("dtls_version", 0, 1)])
def test_a_changed_setting_gets_its_own_configuration(field, first, second):
    """The built configuration is shared only between equal settings: a changed PSK key or
    identity, ALPN list or DTLS version gets a new one (mutants: a field left out of
    _config_key, so the first configuration was served again)."""
    extra = dict(dtls=True) if field == "dtls_version" else {}
    if field == "psk_identity":
        extra["psk_key"] = b"k3y"
    one = _plan(**{field: first}, **extra).configuration
    two = _plan(**{field: second}, **extra).configuration
    assert one is not two
    assert _plan(**{field: first}, **extra).configuration is one


def _client_pair():
    from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

    cert, key = _cert(_name("modem-client"), None, san=())
    return cert.public_bytes(Encoding.PEM), key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def test_client_pair_only_at_seclevel_2_and_a_replaced_key_is_checked_again(root):
    """The client pair is parsed and offered at seclevel 2 only (seclevel 1 ignores it); a
    key replaced by one of another certificate fails the next open, even right after the good
    pair was used (mutants: the pair read at seclevel 1, the key left out of _config_key)."""
    from tls_engine.errors import BAD_CONFIG

    cert_pem, key_pem = _client_pair()
    _, other_key_pem = _client_pair()
    ca = dict(ca_pem=root[0].public_bytes(Encoding.PEM))
    assert _plan(seclevel=1, client_cert_pem=cert_pem, client_key_pem=other_key_pem, **ca).configuration \
        .certificate_chain is None
    assert _plan(seclevel=2, client_cert_pem=cert_pem, client_key_pem=key_pem, **ca).configuration \
        .certificate_chain is not None
    error = _config_error(seclevel=2, client_cert_pem=cert_pem, client_key_pem=other_key_pem, **ca)
    assert error.kind == BAD_CONFIG and "does not belong" in error.reason


def test_seclevel_2_with_half_a_client_pair_is_bad_config(root):
    """Half a pair (a certificate without key, or a key without certificate) is refused; only
    neither set offers no certificate (mutant: half a pair taken as none)."""
    from tls_engine.errors import BAD_CONFIG

    cert_pem, key_pem = _client_pair()
    ca = dict(ca_pem=root[0].public_bytes(Encoding.PEM))
    assert _config_error(seclevel=2, client_key_pem=key_pem, **ca).kind == BAD_CONFIG
    assert _config_error(seclevel=2, client_cert_pem=cert_pem, **ca).kind == BAD_CONFIG
    assert _plan(seclevel=2, **ca).configuration.certificate_chain is None


def test_configuration_and_context_caches_stay_within_their_bound():
    """_remember keeps at most _CACHE_MAX entries, dropping the oldest (mutant: `>`, one more)."""
    from tls_engine import config

    for extra in range(config._CACHE_MAX + 3):
        _plan(alpn=(f"mut12-{extra}",))
    assert len(config._PLANS) <= config._CACHE_MAX


# --- ciphers.py ------------------------------------------------------------------------------

def test_suites_outside_the_table_come_from_the_library():
    """An id outside the note's table that the TLS library knows (0x009C) is named, available
    and offerable, and its Mbed TLS name maps back to it; an id nobody knows (0x1234) is none
    of these (docs/behaviour.md ciphersuite row: "the library's other suites, e.g. 0X009C, are
    offered too"; mutants: no library fallback for names or ids, every id offerable with
    native, the table alone available, offerable only through native)."""
    from tls_engine import ciphers as cs

    assert cs.suite_name(0x009C) == "TLS_RSA_WITH_AES_128_GCM_SHA256"
    assert cs.suite_available(0x009C) and cs.suite_offerable(0x009C)
    assert cs.suite_id_for_mbedtls_name("TLS-RSA-WITH-AES-128-GCM-SHA256") == 0x009C
    assert cs.suite_name(0x1234) is None
    assert not cs.suite_available(0x1234) and not cs.suite_offerable(0x1234)


def test_suite_spellings():
    """CipherSuite.code is AT+QSSLCFG's "0X0035" (four hex digits, upper case); describe() is
    "0x0005 TLS_RSA_WITH_RC4_128_SHA"; the Mbed TLS name has every underscore a dash."""
    from tls_engine import ciphers as cs

    assert cs.CIPHER_TABLE[0x002F].code == "0X002F"
    assert cs.CIPHER_TABLE[0xC02F].code == "0XC02F"
    assert cs.describe(0x000A) == "0x000A TLS_RSA_WITH_3DES_EDE_CBC_SHA"
    assert cs.CIPHER_TABLE[0xC02F].mbedtls_name == "TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256"


def test_default_offer_is_the_table_in_manual_order_with_rc4_3des_when_native_works():
    """0XFFFF: every table suite this build can offer, in the manual's order; RC4/3DES rows
    only when tls_engine.native is usable (mutants: reversed, the RC4/3DES rows always left
    out)."""
    from tls_engine import ciphers as cs
    from tls_engine import native

    offer = cs.default_offer()
    assert list(offer) == [i for i in cs.CIPHER_TABLE if i in offer]
    assert offer[:2] == (0x0035, 0x002F)
    assert (0x0005 in offer) is native.available()
