"""Adversarial: certificate and key material as real users upload it (AT+QFUPL on the EC2x,
AT+QSECWRITE slots on the ML302), and certificate-verification edge cases, judged from the
server side (OpenSSL through emulator.testing.peers.TlsServer): CA files with CRLF, BOMs,
comments, several PEM blocks, a 150-CA bundle with the right CA last, DER; duplicate-name CAs;
intermediates only in cacertex; dates at AT+CCLK edges (before 2000 through the time zone,
the 2050 UTCTime/GeneralizedTime switch, a leap day); client keys of other types and
encodings (P-384, RSA-4096, SEC1 with EC PARAMETERS, PKCS#1, combined cert+key files),
encrypted and mismatched keys; names (wildcard CN, IP strings in dNSName, a trailing dot);
files replaced or deleted between opens.  Each open's code is the one docs/behaviour.md
gives (EC2x +QSSLOPEN <err> and AT+QIGETERROR; ML302 -1), with no traceback in the log."""
from __future__ import annotations

import datetime
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from emulator.testing.peers import NOW, ServerIdentity, TlsServer, openssl_binary
from emulator.testing.peers.pki import Issued, make_cert, utc
from tests.e2e.ssl_options_support import HOST, PORT, cfg, close, last_error, open_ssl, opened, trust

DAY = datetime.timedelta(days=1)
OK = b"\r\nOK\r\n"
PEM = serialization.Encoding.PEM
DER = serialization.Encoding.DER


# -- material ---------------------------------------------------------------------------------
def build(cn: str, issuer: Issued | None, *, ca: bool = False, **kwargs) -> Issued:
    """pki.make_cert with a leaf as the default."""
    return make_cert(cn, issuer, ca=ca, **kwargs)


def key_pem(key, fmt=serialization.PrivateFormat.PKCS8, enc=None) -> bytes:
    return key.private_bytes(PEM, fmt, enc or serialization.NoEncryption())


def der(cert: Issued) -> bytes:
    return cert.cert.public_bytes(DER)


@pytest.fixture(scope="module")
def mat():
    root = build("Mat Root", None, ca=True, not_before=NOW - 10 * DAY, not_after=NOW + 3650 * DAY)
    inter = build("Mat Inter", root, ca=True)
    return {"root": root, "inter": inter,
            "leaf": build("mat-leaf", inter, names=(HOST,)),
            "other_root": build("Mat Other Root", None, ca=True)}


@pytest.fixture
def modem(ec2x_strict):
    return ec2x_strict[0]


@pytest.fixture
def route(emulator):
    def add(server, host: str = HOST, port: int = PORT) -> None:
        emulator.router.add_map(host, port, "127.0.0.1", server.port)
    return add


def log_text(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("emulator"))


def upload(modem, name: str, data: bytes) -> None:
    assert modem.upload(name, data).endswith(OK)


def replace(modem, name: str, data: bytes) -> None:
    assert modem.at(f'AT+QFDEL="{name}"') == OK
    upload(modem, name, data)


def expect_open(modem, server, code: int, client_id: int = 0, host: str = HOST) -> None:
    """+QSSLOPEN with `code`, AT+QIGETERROR agreeing, and the server's view matching it."""
    got = open_ssl(modem, 0, client_id, host=host)
    if got == 0:
        close(modem, client_id)
    assert got == code
    if code:
        assert last_error(modem) == code
    if code in (0, 566) and server is not None:
        conn = server.wait_handshake()
        assert bool(conn.handshake_done) == (code == 0)


# == CA files as users upload them ==============================================================
def _ca_variants(ca: bytes, other: bytes, ca_key: bytes) -> dict[str, bytes]:
    return {
        "crlf": ca.replace(b"\n", b"\r\n"),
        "utf8_bom": b"\xef\xbb\xbf" + ca,
        "bag_attributes_and_comments": (b"Bag Attributes\n    localKeyID: 01 02\n"
                                        b"subject=/CN=Mat Root\nissuer=/CN=Mat Root\n# comment\n"
                                        + ca + b"\n# trailing comment\n"),
        "no_final_newline": ca.rstrip(b"\n"),
        "glued_without_newline_right_ca_last": other.rstrip(b"\n") + ca,
        "ca_followed_by_its_private_key": ca + ca_key,
        "private_key_first": ca_key + ca,
        "crl_block_first": b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n" + ca,
    }


@pytest.mark.parametrize("variant", list(_ca_variants(b"", b"", b"")))
def test_ca_file_variants_users_upload_verify(modem, route, mat, variant):
    data = _ca_variants(mat["root"].cert_pem, mat["other_root"].cert_pem, mat["root"].key_pem)[variant]
    with TlsServer(ServerIdentity(mat["leaf"], mat["inter"])) as server:
        route(server)
        trust(modem, 0, data, name="UFS:variant.pem")
        expect_open(modem, server, 0)


def test_bundle_of_150_cas_with_the_right_one_last(modem, route, mat):
    decoys = [build(f"Decoy CA {i}", None, ca=True) for i in range(150)]
    bundle = b"".join(d.cert_pem for d in decoys) + mat["root"].cert_pem
    assert len(bundle) > 10240                    # past AT+QFUPL's default size
    with TlsServer(ServerIdentity(mat["leaf"], mat["inter"])) as server:
        route(server)
        trust(modem, 0, bundle, name="UFS:bundle.pem")
        expect_open(modem, server, 0)
        replace(modem, "UFS:bundle.pem", b"".join(d.cert_pem for d in decoys))   # root gone
        expect_open(modem, server, 566)


def test_der_ca_file_is_read_as_mbed_tls_reads_it(modem, route, mat, caplog):
    """The note says nothing of DER; the CA file is read as Mbed TLS 2.28's
    mbedtls_x509_crt_parse reads it (docs/behaviour.md): no PEM header, so the file is one DER
    certificate -- the open verifies against it.  A file that is neither (a DER certificate cut
    short) is a context that cannot work: 552 before any handshake, the log says why."""
    with TlsServer(ServerIdentity(mat["leaf"], mat["inter"])) as server:
        route(server)
        trust(modem, 0, der(mat["root"]), name="UFS:root.der")
        expect_open(modem, server, 0)
    with TlsServer(ServerIdentity(mat["leaf"], mat["inter"])) as server:
        route(server)
        trust(modem, 0, der(mat["root"])[:-40], name="UFS:cut.der")
        expect_open(modem, None, 552)
        assert all(c.client_hello is None for c in server.connections)
    assert "neither a PEM certificate nor one DER certificate Mbed TLS reads" in log_text(caplog)


def test_bundle_with_one_corrupt_certificate_is_552_with_a_reason(modem, route, mat, caplog):
    broken = b"-----BEGIN CERTIFICATE-----\nMIIBroken\n-----END CERTIFICATE-----\n"
    with TlsServer(ServerIdentity(mat["leaf"], mat["inter"])) as server:
        route(server)
        trust(modem, 0, mat["root"].cert_pem + broken, name="UFS:broken.pem")
        expect_open(modem, None, 552)
    assert "cannot parse CA certificate UFS:broken.pem" in log_text(caplog)


def test_bare_name_is_ufs_not_ram(modem, route, mat):
    upload(modem, "RAM:same.pem", mat["root"].cert_pem)
    upload(modem, "UFS:same.pem", mat["other_root"].cert_pem)
    with TlsServer(ServerIdentity(mat["leaf"], mat["inter"])) as server:
        route(server)
        trust(modem, 0, b"", name="same.pem")      # (already there: no upload)
        expect_open(modem, server, 566)
        cfg(modem, "cacert", 0, '"RAM:same.pem"')
        expect_open(modem, server, 0)


# == trust anchors: duplicates, cacertex, anchors' dates ========================================
@pytest.fixture(scope="module")
def renewed():
    """One CA key, two certificates with the same subject: an expired one and its renewal
    (what a CA bundle holds for a while after a root is re-issued), and a leaf under it."""
    key = ec.generate_private_key(ec.SECP256R1())
    old = build("Mat Renewed Root", None, key=key, ca=True, not_before=NOW - 800 * DAY,
                not_after=NOW - 30 * DAY)
    new = build("Mat Renewed Root", None, key=key, ca=True, not_before=NOW - 31 * DAY,
                not_after=NOW + 3650 * DAY)
    return old, new, build("renewed-leaf", new, names=(HOST,))


def test_renewed_root_listed_after_its_expired_predecessor_verifies_in_this_order(modem, route, renewed):
    old, new, leaf = renewed
    with TlsServer(ServerIdentity(leaf)) as server:
        route(server)
        trust(modem, 0, new.cert_pem + old.cert_pem, name="UFS:new-old.pem")
        cfg(modem, "ignorelocaltime", 0, 0)
        expect_open(modem, server, 0)
        trust(modem, 0, old.cert_pem, name="UFS:old.pem")        # the expired one alone
        expect_open(modem, server, 566)


# Was a bug, fixed: the verdict depended on the order of the CA file (the expired root first:
# 566 "issuer ... expired"); as Mbed TLS's x509_crt_find_parent, a parent valid at the modem
# clock is now preferred and an out-of-date one taken only when no other signs the child.
def test_expired_root_listed_before_its_renewal_still_verifies(modem, route, renewed):
    old, new, leaf = renewed
    with TlsServer(ServerIdentity(leaf)) as server:
        route(server)
        trust(modem, 0, old.cert_pem + new.cert_pem, name="UFS:old-new.pem")
        cfg(modem, "ignorelocaltime", 0, 0)
        expect_open(modem, server, 0)


# Was a bug, fixed: the same order dependence for the certificates the server sends (expired
# intermediate before its renewal: 566).
def test_server_sending_an_expired_intermediate_before_its_renewal_verifies(modem, route, mat):
    key = ec.generate_private_key(ec.SECP256R1())
    old = build("Mat Renewed Inter", mat["root"], key=key, ca=True, not_before=NOW - 400 * DAY,
                not_after=NOW - 30 * DAY)
    new = build("Mat Renewed Inter", mat["root"], key=key, ca=True)
    leaf = build("leaf-ri", new, names=(HOST,))
    with TlsServer(ServerIdentity(leaf, old, new)) as server:
        route(server)
        trust(modem, 0, mat["root"].cert_pem, name="UFS:matroot.pem")
        cfg(modem, "ignorelocaltime", 0, 0)
        expect_open(modem, server, 0)


@pytest.mark.parametrize("intermediates, code", [(8, 0), (9, 566)])
def test_chain_depth_limit_is_mbedtls_s(modem, route, mat, caplog, intermediates, code):
    """Mbed TLS 2.28 verifies at most 10 certificates (leaf, 8 intermediates, the root:
    MBEDTLS_X509_MAX_INTERMEDIATE_CA 8); README: max depth 10."""
    chain, issuer = [], mat["root"]
    for i in range(intermediates):
        issuer = build(f"Mat Deep {i}", issuer, ca=True)
        chain.append(issuer)
    leaf = build("deep-leaf", issuer, names=(HOST,))
    with TlsServer(ServerIdentity(leaf, *reversed(chain))) as server:
        route(server)
        trust(modem, 0, mat["root"].cert_pem, name="UFS:matroot.pem")
        expect_open(modem, server, code)
    if code:
        assert "certificates does not reach UFS:matroot.pem (Mbed TLS walks at most 8 intermediates)" in log_text(caplog)


def test_same_name_roots_with_different_keys_any_order(modem, route):
    """Two roots named alike, different keys: the one whose key signed is found either way."""
    a = build("Mat Twin Root", None, ca=True)
    b = build("Mat Twin Root", None, ca=True)
    leaf = build("twin-leaf", b, names=(HOST,))
    with TlsServer(ServerIdentity(leaf)) as server:
        route(server)
        for order, name in (((a, b), "UFS:ab.pem"), ((b, a), "UFS:ba.pem")):
            trust(modem, 0, b"".join(c.cert_pem for c in order), name=name)
            expect_open(modem, server, 0)
        trust(modem, 0, a.cert_pem, name="UFS:a.pem")
        expect_open(modem, server, 566)


def test_intermediate_supplied_only_in_cacertex(modem, route, mat, caplog):
    """The server sends its leaf alone; the intermediate is in cacertex, the root in cacert."""
    upload(modem, "UFS:inter.pem", mat["inter"].cert_pem)
    with TlsServer(ServerIdentity(mat["leaf"])) as server:
        route(server)
        trust(modem, 0, mat["root"].cert_pem, name="UFS:matroot.pem")
        expect_open(modem, server, 566)
        cfg(modem, "cacertex", 0, '"UFS:inter.pem"')
        expect_open(modem, server, 0)
        assert modem.at('AT+QFDEL="UFS:inter.pem"') == OK          # deleted after configuring
        expect_open(modem, None, 552)
    assert "cacertex file UFS:inter.pem not found" in log_text(caplog)


@pytest.mark.parametrize("window, ok_at, bad_at", [
    ((NOW - 800 * DAY, NOW - 30 * DAY), None, "expired"),          # expired anchor
    ((NOW + 30 * DAY, NOW + 900 * DAY), None, "not yet valid"),    # anchor not yet valid
])
def test_anchor_dates_are_checked_at_the_modem_clock(modem, route, caplog, window, ok_at, bad_at):
    key = ec.generate_private_key(ec.SECP256R1())
    root = build("Mat Dated Root", None, key=key, ca=True, not_before=window[0], not_after=window[1])
    leaf = build("dated-leaf", root, names=(HOST,), not_before=NOW - 900 * DAY, not_after=NOW + 900 * DAY)
    with TlsServer(ServerIdentity(leaf)) as server:
        route(server)
        trust(modem, 0, root.cert_pem, name="UFS:dated.pem")
        expect_open(modem, server, 0)                              # ignorelocaltime 1
        cfg(modem, "ignorelocaltime", 0, 0)
        expect_open(modem, server, 566)
    assert f"issuer certificate CN=Mat Dated Root {bad_at} at modem clock" in log_text(caplog)


# == dates at AT+CCLK edges =====================================================================
@pytest.mark.parametrize("cclk, code", [
    ("00/01/01,00:00:00+32", 0),        # 1999-12-31 16:00 UTC: before 2000 through the zone
    ("00/01/01,07:59:00+32", 0),        # 1999-12-31 23:59 UTC (the clock runs on: margins)
    ("00/01/01,08:01:00+32", 566),      # 2000-01-01 00:01 UTC
    ("00/01/01,00:00:00+00", 566),
])
def test_a_1999_certificate_at_a_modem_clock_reaching_back_into_1999(modem, route, cclk, code):
    root = build("Mat 1990 Root", None, ca=True, not_before=utc(1990), not_after=utc(2090))
    leaf = build("y1999", root, names=(HOST,), not_before=utc(1999), not_after=utc(1999, 12, 31, 23, 59, 59))
    with TlsServer(ServerIdentity(leaf)) as server:
        route(server)
        trust(modem, 0, root.cert_pem, name="UFS:r1990.pem")
        cfg(modem, "ignorelocaltime", 0, 0)
        assert modem.at(f'AT+CCLK="{cclk}"') == OK
        expect_open(modem, server, code)


def test_generalizedtime_dates_after_2050(modem, route):
    """notBefore 2049-06-01 (UTCTime), notAfter 2050-06-01 (GeneralizedTime in DER)."""
    root = build("Mat 2090 Root", None, ca=True, not_before=utc(2000), not_after=utc(2098))
    leaf = build("y2050", root, names=(HOST,), not_before=utc(2049, 6, 1), not_after=utc(2050, 6, 1))
    assert b"\x18\x0f20500601" in der(leaf)         # GeneralizedTime on the wire
    with TlsServer(ServerIdentity(leaf)) as server:
        route(server)
        trust(modem, 0, root.cert_pem, name="UFS:r2090.pem")
        cfg(modem, "ignorelocaltime", 0, 0)
        for cclk, code in (("49/05/31,23:59:00+00", 566), ("49/06/01,00:01:00+00", 0),
                           ("50/05/31,23:59:00+00", 0), ("50/06/01,00:01:00+00", 566),
                           ("97/01/01,00:00:00+00", 566)):
            assert modem.at(f'AT+CCLK="{cclk}"') == OK
            expect_open(modem, server, code)


def test_leap_day_not_after(modem, route):
    root = build("Mat Leap Root", None, ca=True, not_before=utc(2000), not_after=utc(2098))
    leaf = build("leap", root, names=(HOST,), not_before=utc(2027), not_after=utc(2028, 2, 29, 12))
    with TlsServer(ServerIdentity(leaf)) as server:
        route(server)
        trust(modem, 0, root.cert_pem, name="UFS:leap.pem")
        cfg(modem, "ignorelocaltime", 0, 0)
        assert modem.at('AT+CCLK="28/02/29,11:59:00+00"') == OK
        expect_open(modem, server, 0)
        assert modem.at('AT+CCLK="28/02/29,20:01:00+32"') == OK   # 12:01 UTC
        expect_open(modem, server, 566)
        # no 29 February in 2027: refused, the clock is not moved
        assert modem.at('AT+CCLK="27/02/29,10:00:00+00"') == b"\r\n+CME ERROR: 50\r\n"
        assert b'+CCLK: "28/02/29,' in modem.at("AT+CCLK?")


def test_seclevel_0_looks_at_neither_dates_nor_name(modem, route, mat):
    leaf = build("stale", mat["other_root"], names=("elsewhere.example",),
                 not_before=NOW - 800 * DAY, not_after=NOW - 30 * DAY)
    with TlsServer(ServerIdentity(leaf)) as server:
        route(server)
        cfg(modem, "ignorelocaltime", 0, 0)
        upload(modem, "UFS:unused.pem", mat["root"].cert_pem)
        cfg(modem, "cacert", 0, '"UFS:unused.pem"')
        expect_open(modem, server, 0)


# == host names =================================================================================
@pytest.mark.parametrize("dial, code", [("www.iottest.work", 0), ("a.iottest.work", 0),
                                        ("iottest.work", 566), ("x.www.iottest.work", 566)])
def test_wildcard_in_a_cn_only_certificate(modem, route, mat, dial, code):
    leaf = build("*.iottest.work", mat["inter"])        # no SAN at all
    with TlsServer(ServerIdentity(leaf, mat["inter"])) as server:
        route(server, host=dial)
        trust(modem, 0, mat["root"].cert_pem, name="UFS:matroot.pem")
        expect_open(modem, server, code, host=dial)


def test_ip_written_as_a_dns_san_does_not_match_an_ip_literal(modem, emulator, mat, caplog):
    """behaviour.md: a dialled IP literal must be an iPAddress SAN (a dNSName "203.0.113.9" is
    not enough), or, in a certificate with no SAN, its CN (as Mbed TLS's CN fallback)."""
    ip = "203.0.113.9"
    as_dns = build("ipdns", mat["inter"], names=(x509.DNSName(ip),))
    as_cn = build(ip, mat["inter"])
    good = build("ipsan", mat["inter"], names=(ip,))
    trust(modem, 0, mat["root"].cert_pem, name="UFS:matroot.pem")
    for leaf, code in ((as_dns, 566), (as_cn, 0), (good, 0)):
        with TlsServer(ServerIdentity(leaf, mat["inter"])) as server:
            emulator.router.add_map(ip, PORT, "127.0.0.1", server.port)
            expect_open(modem, server, code, host=ip)
    assert f"does not match '{ip}'" in log_text(caplog)


def test_dialled_name_with_a_trailing_dot(modem, route, mat):
    """Mbed TLS compares the dialled name with the certificate's byte for byte: "name." does
    not match "name" (tests/unit/tls_engine/test_verify_differential.py measures it)."""
    dial = HOST + "."
    with TlsServer(ServerIdentity(mat["leaf"], mat["inter"])) as server:
        route(server, host=dial)
        trust(modem, 0, mat["root"].cert_pem, name="UFS:matroot.pem")
        expect_open(modem, server, 566, host=dial)


def test_name_is_checked_with_sni_on_and_off(modem, route, mat):
    with TlsServer(ServerIdentity(mat["leaf"], mat["inter"])) as server:
        route(server, host="other.example")
        trust(modem, 0, mat["root"].cert_pem, name="UFS:matroot.pem")
        for sni in (0, 1):
            cfg(modem, "sni", 0, sni)
            expect_open(modem, server, 566, host="other.example")
            assert server.conn.sni == ("other.example" if sni else None)


# == client certificates and keys ===============================================================
def _client_variants(root: Issued) -> dict[str, tuple[bytes, bytes, bytes]]:
    """name -> (clientcert file, clientkey file, the DER the server must receive)."""
    out = {}
    p384 = ec.generate_private_key(ec.SECP384R1())
    c = build("client-p384", root, key=p384)
    out["p384_sec1"] = (c.cert_pem, key_pem(p384, serialization.PrivateFormat.TraditionalOpenSSL), der(c))
    r4096 = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    c = build("client-rsa4096", root, key=r4096)
    out["rsa4096_pkcs1"] = (c.cert_pem, key_pem(r4096, serialization.PrivateFormat.TraditionalOpenSSL), der(c))
    ecparam = subprocess.run([openssl_binary(), "ecparam", "-name", "prime256v1", "-genkey"],
                             check=True, capture_output=True).stdout
    assert ecparam.startswith(b"-----BEGIN EC PARAMETERS-----")
    k = serialization.load_pem_private_key(ecparam, None)
    c = build("client-ecparam", root, key=k)
    out["openssl_ecparam_genkey"] = (c.cert_pem, ecparam, der(c))
    p521 = ec.generate_private_key(ec.SECP521R1())
    c = build("client-p521", root, key=p521)
    out["p521_pkcs8"] = (c.cert_pem, key_pem(p521), der(c))
    p256 = ec.generate_private_key(ec.SECP256R1())
    c = build("client-crlf", root, key=p256)
    out["pkcs8_crlf"] = (c.cert_pem.replace(b"\n", b"\r\n"), key_pem(p256).replace(b"\n", b"\r\n"), der(c))
    combined = c.cert_pem + key_pem(p256)
    out["one_combined_file_for_both"] = (combined, combined, der(c))
    return out


@pytest.fixture(scope="module")
def clients(mat):
    return _client_variants(mat["root"])


@pytest.mark.parametrize("variant", ["p384_sec1", "p521_pkcs8", "rsa4096_pkcs1", "openssl_ecparam_genkey",
                                     "pkcs8_crlf", "one_combined_file_for_both"])
def test_client_identity_variants_reach_the_server(modem, route, mat, clients, variant):
    cert, key, expected = clients[variant]
    upload(modem, "UFS:cli.pem", cert)
    upload(modem, "UFS:cli.key", key)
    cfg(modem, "clientcert", 0, '"UFS:cli.pem"')
    cfg(modem, "clientkey", 0, '"UFS:cli.key"')
    with TlsServer(ServerIdentity(mat["leaf"], mat["inter"]), client_ca=mat["root"].cert_pem,
                   require_client_cert=True) as server:
        route(server)
        trust(modem, 0, mat["root"].cert_pem, name="UFS:matroot.pem", seclevel=2)
        expect_open(modem, server, 0)
        assert server.conn.client_cert_der == expected


@pytest.mark.parametrize("what, reason", [
    ("traditional_encrypted_rsa", "client key is encrypted"),
    ("same_type_other_key", "client key does not belong to the client certificate"),
    ("swapped_pair", "cannot parse client"),
    # (an Ed25519 certificate is not one Mbed TLS 2.28 reads: refused with the file, as in the CA)
    ("ed25519_key", "cannot parse client certificate: certificate 1 is not one Mbed TLS reads"),
])
def test_unusable_client_material_is_552_before_the_client_hello(modem, route, mat, pki, caplog,
                                                                 what, reason):
    from cryptography.hazmat.primitives.asymmetric import ed25519
    rkey = serialization.load_pem_private_key(pki.client.key_pem, None)
    ed = ed25519.Ed25519PrivateKey.generate()
    cert, key = {
        "traditional_encrypted_rsa": (pki.client.cert_pem, key_pem(
            rkey, serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.BestAvailableEncryption(b"secret"))),
        "same_type_other_key": (pki.client.cert_pem, pki.server.key_pem),
        "swapped_pair": (pki.client.key_pem, pki.client.cert_pem),
        "ed25519_key": (build("ed", mat["root"], key=ed).cert_pem, key_pem(ed)),
    }[what]
    if what == "traditional_encrypted_rsa":
        assert b"Proc-Type: 4,ENCRYPTED" in key
    upload(modem, "UFS:bad.pem", cert)
    upload(modem, "UFS:bad.key", key)
    cfg(modem, "clientcert", 0, '"UFS:bad.pem"')
    cfg(modem, "clientkey", 0, '"UFS:bad.key"')
    with TlsServer(pki.server, client_ca=pki.ca.cert_pem, require_client_cert=True) as server:
        route(server)
        trust(modem, 0, pki.ca.cert_pem, seclevel=2)
        expect_open(modem, None, 552)
        assert all(c.client_hello is None for c in server.connections)
    assert reason in log_text(caplog)


def test_client_chain_file_with_the_intermediate_before_the_leaf_is_552(modem, route, mat, caplog):
    """clientcert = intermediate then leaf (the wrong order users paste): the first certificate
    is taken as the client's own and the key does not belong to it: 552 with that reason,
    nothing sent (never a handshake signed with a key that does not match)."""
    leaf = build("client-under-inter", mat["inter"])
    upload(modem, "UFS:rev.pem", mat["inter"].cert_pem + leaf.cert_pem)
    upload(modem, "UFS:rev.key", leaf.key_pem)
    cfg(modem, "clientcert", 0, '"UFS:rev.pem"')
    cfg(modem, "clientkey", 0, '"UFS:rev.key"')
    with TlsServer(ServerIdentity(mat["leaf"], mat["inter"]), client_ca=mat["root"].cert_pem,
                   require_client_cert=True) as server:
        route(server)
        trust(modem, 0, mat["root"].cert_pem, name="UFS:matroot.pem", seclevel=2)
        expect_open(modem, None, 552)
        assert all(c.client_hello is None for c in server.connections)
        replace(modem, "UFS:rev.pem", leaf.cert_pem + mat["inter"].cert_pem)   # leaf first
        expect_open(modem, server, 0)
        assert server.conn.client_cert_der == der(leaf)
    assert "client key does not belong to the client certificate" in log_text(caplog)


def test_seclevel_1_with_unusable_client_files_configured_still_connects(modem, route, mat):
    """seclevel 1 uses no client material: files that could not work there are not read."""
    cfg(modem, "clientcert", 0, '"UFS:no-such.pem"')
    cfg(modem, "clientkey", 0, '"UFS:no-such.key"')
    with TlsServer(ServerIdentity(mat["leaf"], mat["inter"]), client_ca=mat["root"].cert_pem) as server:
        route(server)
        trust(modem, 0, mat["root"].cert_pem, name="UFS:matroot.pem")
        expect_open(modem, server, 0)
        assert server.conn.client_cert_der is None


# == files replaced or deleted between opens ====================================================
def test_client_identity_replaced_between_opens_is_the_one_sent(modem, route, mat):
    first = build("client-first", mat["root"])
    second = build("client-second", mat["root"])
    upload(modem, "UFS:id.pem", first.cert_pem)
    upload(modem, "UFS:id.key", first.key_pem)
    cfg(modem, "clientcert", 0, '"UFS:id.pem"')
    cfg(modem, "clientkey", 0, '"UFS:id.key"')
    with TlsServer(ServerIdentity(mat["leaf"], mat["inter"]), client_ca=mat["root"].cert_pem,
                   require_client_cert=True) as server:
        route(server)
        trust(modem, 0, mat["root"].cert_pem, name="UFS:matroot.pem", seclevel=2)
        cfg(modem, "session_cache", 0, 1)                  # resumption allowed
        expect_open(modem, server, 0)
        assert server.conn.client_cert_der == der(first)
        replace(modem, "UFS:id.pem", second.cert_pem)
        expect_open(modem, None, 552)                      # old key, new cert: no pair
        replace(modem, "UFS:id.key", second.key_pem)
        expect_open(modem, server, 0)
        conn = server.conn
        assert conn.client_cert_der == der(second) and not conn.session_reused


def test_ca_deleted_after_a_cached_session_is_552_not_a_resumption(modem, route, mat, caplog):
    with TlsServer(ServerIdentity(mat["leaf"], mat["inter"])) as server:
        route(server)
        trust(modem, 0, mat["root"].cert_pem, name="RAM:gone.pem")
        cfg(modem, "session_cache", 0, 1)
        expect_open(modem, server, 0)
        assert modem.at('AT+QFDEL="RAM:gone.pem"') == OK
        n = len(server.connections)
        expect_open(modem, None, 552)
        assert all(c.client_hello is None for c in server.connections[n:])
    assert "cacert file RAM:gone.pem not found" in log_text(caplog)


def test_client_cert_deleted_before_a_seclevel_2_open_is_552_before_any_tcp(modem, route, mat, pki):
    upload(modem, "UFS:c.pem", pki.client.cert_pem)
    upload(modem, "UFS:c.key", pki.client.key_pem)
    cfg(modem, "clientcert", 0, '"UFS:c.pem"')
    cfg(modem, "clientkey", 0, '"UFS:c.key"')
    assert modem.at('AT+QFDEL="UFS:c.pem"') == OK
    with TlsServer(pki.server, client_ca=pki.ca.cert_pem, require_client_cert=True) as server:
        route(server)
        trust(modem, 0, pki.ca.cert_pem, seclevel=2)
        expect_open(modem, None, 552)
        assert modem.quiet_for(0.2) == b""
        assert server.connections == []


# == ML302: the same material through AT+QSECWRITE ==============================================
ML_HOST, ML_PORT = "www.iottest.work", 443


def secwrite(host, slot: int, data: bytes) -> None:
    assert b"\x1a" not in data and b"\x1b" not in data
    host.at(f"AT+QSECDEL={slot}")
    host.write(f"AT+QSECWRITE={slot}\r")
    assert host.read_until(b"\r\n> ") == b"\r\n> "
    host.write(data + b"\x1a")
    assert host.read_until(b"OK\r\n").startswith(b"\r\n+QSECWRITE: %d," % len(data))


def ml_open(host, emulator, server, code: int) -> None:
    emulator.router.add_map(ML_HOST, ML_PORT, "127.0.0.1", server.port)
    assert host.at(f'AT+QSSLOPEN=0,0,"{ML_HOST}",{ML_PORT},0') == OK
    got = opened(host, 0, timeout=20)
    if got == 0:
        assert host.at("AT+QSSLCLOSE=0").startswith(OK)
        host.seen(b"0,CLOSE OK\r\n")
    assert got == code


def test_ml302_ca_bundle_slot_and_p384_client_key(ml302_strict, emulator, pki):
    host = ml302_strict[0]
    decoys = b"".join(build(f"ML Decoy {i}", None, ca=True).cert_pem for i in range(15))
    bundle = decoys.replace(b"\n", b"\r\n") + pki.ca.cert_pem
    assert 8000 < len(bundle) <= 16384
    secwrite(host, 0, bundle)
    p384 = ec.generate_private_key(ec.SECP384R1())
    ca = Issued(x509.load_pem_x509_certificate(pki.ca.cert_pem),
                serialization.load_pem_private_key(pki.ca.key_pem, None))
    client = build("ml-client-p384", ca, key=p384)
    secwrite(host, 1, client.cert_pem)
    secwrite(host, 2, key_pem(p384, serialization.PrivateFormat.TraditionalOpenSSL))
    assert host.at('AT+QSSLCFG="seclevel",0,2') == OK
    with TlsServer(pki.server, client_ca=pki.ca.cert_pem, require_client_cert=True) as server:
        ml_open(host, emulator, server, 0)
        assert server.conn.client_cert_der == der(client)
        # the client slots rewritten: the next open sends the new identity
        other = build("ml-client-next", ca)
        secwrite(host, 1, other.cert_pem)
        secwrite(host, 2, other.key_pem)
        ml_open(host, emulator, server, 0)
        assert server.conn.client_cert_der == der(other)
        secwrite(host, 0, decoys)                          # the right CA gone from the bundle
        ml_open(host, emulator, server, -1)


def test_ml302_expired_anchor_with_ignorertctime_0(ml302_strict, emulator, pki, caplog):
    host = ml302_strict[0]
    ca = Issued(x509.load_pem_x509_certificate(pki.ca.cert_pem),
                serialization.load_pem_private_key(pki.ca.key_pem, None))
    # the shared CA re-issued as an expired certificate with the same subject and key
    b = (x509.CertificateBuilder().subject_name(ca.cert.subject).issuer_name(ca.cert.subject)
         .public_key(ca.key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(NOW - 800 * DAY).not_valid_after(NOW - 30 * DAY)
         .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True))
    expired = b.sign(ca.key, hashes.SHA256()).public_bytes(PEM)
    secwrite(host, 0, expired)
    assert host.at('AT+QSSLCFG="seclevel",0,1') == OK
    with TlsServer(pki.server) as server:
        ml_open(host, emulator, server, 0)                 # ignorertctime 1 (default)
        assert host.at('AT+QSSLCFG="ignorertctime",0') == OK
        ml_open(host, emulator, server, -1)
    assert "expired at modem clock" in log_text(caplog)
