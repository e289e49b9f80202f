"""Review of commit a5afbc9 (tls_engine/config.py `_trust_store`, `_config_key`): Mbed TLS in
the engine gets the CA file's certificates as its trust store (still VERIFY_OPTIONAL; the
check, tls_engine/verify.py, decides the verdict).

Under VERIFY_OPTIONAL Mbed TLS 2.28's only fatal chain result is its 8-intermediate limit
(x509_crt_verify_chain: MBEDTLS_ERR_X509_FATAL_ERROR): a trust store can only make its walk
stop sooner.  So what is probed here is a long chain (8 intermediates and the root sent: 10
certificates) against CA files laid out in every way a host uploads them -- CRLF, text
around the blocks (openssl x509 -text), the CA twice, a bundle of many unrelated CAs, a
block Mbed TLS cannot parse (an unknown critical extension) that cryptography reads, a
same-named CA with another key first (key rollover), the CA after a broken block -- each
compared with python-mbedtls VERIFY_REQUIRED holding what Mbed TLS's own x509_crt_parse
keeps of the same file (the real module's setup); 9 intermediates still fail as the check
(one access_denied); the configuration cache (64 entries) with more distinct CA files than
that; a self-signed server whose certificate is the CA file, over a real handshake
(OpenSSL server); the CA file's bytes key the configuration, its name does not; a CA expired
by the system clock, valid at the modem clock; through the pty, a two-CA bundle and cacertex.

Bug found (were strict xfails; fixed: _trust_store add()s each certificate): `tls.TrustStore(certs)` -- python-mbedtls's constructor does not
link the certificates into one mbedtls_x509_crt chain (TrustStore().add() does), so Mbed TLS
in the engine trusts only the CA file's FIRST certificate: a chain of 10+ reaching a CA that
is not first in the file (a bundle, a rollover pair, the CA in cacertex) still fails -0x3000
(566 / access_denied) where the module's Mbed TLS (python-mbedtls with every certificate
added) connects.  The commit's unit test reads the store back in Python, not Mbed TLS's chain.
"""
from __future__ import annotations

import datetime
import re

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from mbedtls import tls as mbtls
from mbedtls import x509 as mbx509
from mbedtls.exceptions import TLSError

from emulator.testing.engine_client import ClientDriver
from emulator.testing.peers import ServerIdentity, TlsServer, make_cert
from tests.e2e.ssl_options_support import HOST, PORT, close, open_ssl, trust
from tests.e2e.test_review_changes_1205_c import alerts_in
from tests.e2e.test_review_held_verdict_3 import (
    ACCESS_DENIED, ECDHE_ECDSA_GCM, UNEXPECTED_MESSAGE, CUTS, _der, chain_of, flight_of,
    mbedtls_with)
from tls_engine import HandshakeComplete, TlsClientSession, TlsFailure, TlsSettings, config

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"), pytest.mark.needs_native]


@pytest.fixture(scope="module")
def deep():
    root = make_cert("TS Root", None, ca=True)
    ints, parent = [], root
    for i in range(9):
        parent = make_cert(f"TS Int {i + 1}", parent, ca=True)
        ints.append(parent)
    leaves = {n: make_cert("localhost", ints[n - 1], ca=False, names=("localhost",)) for n in (8, 9)}
    return {"root": root, "ints": ints, "leaves": leaves}


def _critical_unknown_extension_ca(name: str) -> bytes:
    """A self-signed CA cryptography reads and Mbed TLS 2.28 refuses (an unknown critical
    extension: MBEDTLS_ERR_X509_INVALID_EXTENSIONS)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00"),
                           critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def _module_store(ca_pem: bytes):
    """What Mbed TLS's x509_crt_parse keeps of a PEM file (each block on its own; a block it
    refuses is skipped): the real module's trust store."""
    store = mbtls.TrustStore()
    for block in _BLOCK.findall(ca_pem):
        try:
            store.add(mbx509.CRT.from_PEM(block.decode("ascii")))
        except (TLSError, ValueError):
            pass
    return store


def _module(ca_pem: bytes, flight):
    """python-mbedtls VERIFY_REQUIRED with the module's trust store: (error, alerts)."""
    return mbedtls_with(_module_store(ca_pem), flight)


def _engine(ca_pem: bytes, flight, cut=CUTS["one_read"], label: str = "RAM:cacert.pem"):
    s = TlsClientSession(TlsSettings(server_name="localhost", seclevel=1, ca_pem=ca_pem, ca_label=label,
                                     cipher_suites=(ECDHE_ECDSA_GCM,)))
    s.start()
    ch = b"".join(s.outgoing())
    sent = b""
    for piece in cut(flight(ch)):
        s.receive(piece)
        sent += b"".join(s.outgoing())
        if s.state != "handshaking":
            break
    sent += b"".join(s.outgoing())
    return s.state, [e for e in s.events() if isinstance(e, (TlsFailure, HandshakeComplete))], sent


def _layouts(deep) -> dict[str, bytes]:
    root = deep["root"].cert_pem
    others = b"".join(make_cert(f"TS Other {i}", None, ca=True).cert_pem for i in range(40))
    rollover = make_cert("TS Root", None, ca=True).cert_pem          # same name, other key
    text = (b"Certificate:\n    Data:\n        Version: 3 (0x2)\n        Subject: CN=TS Root\n" + root
            + b"\nsome trailing words -----\n")
    return {
        "lf": root,
        "crlf": root.replace(b"\n", b"\r\n"),
        "text_around": text,
        "twice": root + root,
        "bundle_of_41": others + root,
        "unparsable_by_mbedtls_first": _critical_unknown_extension_ca("TS Odd") + root,
        "rollover_first": rollover + root,
        "no_final_newline": root.rstrip(b"\n"),
    }


# FIRST_ONLY (was a bug, fixed): tls_engine/config.py _trust_store built tls.TrustStore(certs):
# python-mbedtls's constructor links none of them, so Mbed TLS trusted only the CA file's FIRST
# certificate (TrustStore().add() per certificate links them): a chain of 10 to a CA that is
# not first failed -0x3000 where the module connects.
LAYOUTS = ["lf", "crlf", "text_around", "twice",
           "bundle_of_41",
           "rollover_first",
           "no_final_newline"]


def test_a_ca_file_with_a_certificate_mbedtls_refuses_is_a_broken_file(deep):
    """A CA Mbed TLS cannot parse (an unknown critical extension) before the root: the module
    reads its CA file with Mbed TLS, so the file is broken there (as a corrupt block is:
    test_adversarial_cert_material) -- the open fails on its configuration (552 / -1), no
    ClientHello; cryptography alone would have read it."""
    ca_pem = _layouts(deep)["unparsable_by_mbedtls_first"]
    x509.load_pem_x509_certificates(ca_pem)                  # (cryptography takes both)
    session = TlsClientSession(TlsSettings(server_name="localhost", seclevel=1, ca_pem=ca_pem,
                                           ca_label="RAM:cacert.pem", cipher_suites=(ECDHE_ECDSA_GCM,)))
    session.start()
    assert b"".join(session.outgoing()) == b""
    [failure] = [e for e in session.events() if isinstance(e, TlsFailure)]
    assert failure.kind == "bad_config" and "cannot parse CA certificate RAM:cacert.pem" in failure.reason, failure
    assert "certificate 1 is not one Mbed TLS reads" in failure.reason, failure


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_chain_of_ten_reaching_the_ca_is_taken_whatever_the_ca_files_layout(deep, layout):
    """8 intermediates and the root sent: the module's Mbed TLS (VERIFY_REQUIRED, its trust
    store from the same file) takes the chain and fails only on the flight's missing
    ServerKeyExchange (unexpected_message); the engine the same -- not -0x3000."""
    ca_pem = _layouts(deep)[layout]
    flight = flight_of([_der(c) for c in chain_of(deep, 8, True)])
    assert _module(ca_pem, flight) == (0x7700, [UNEXPECTED_MESSAGE])
    for cut in ("one_read", "bytewise"):
        state, ends, sent = _engine(ca_pem, flight, CUTS[cut])
        assert state == "failed" and len(ends) == 1 and "-0x7700" in ends[0].reason, (cut, ends)
        assert alerts_in(sent) == [UNEXPECTED_MESSAGE], sent.hex()


@pytest.mark.parametrize("layout", ["crlf", "bundle_of_41", "rollover_first"])
def test_nine_intermediates_under_the_ca_still_fail_with_one_access_denied(deep, layout):
    """More than 8 intermediates below the trusted CA: Mbed TLS's limit, with a trust store
    too (-0x3000) -- the check's failure, one access_denied."""
    ca_pem = _layouts(deep)[layout]
    flight = flight_of([_der(c) for c in chain_of(deep, 9, True)])
    assert _module(ca_pem, flight) == (0x3000, [ACCESS_DENIED])
    state, ends, sent = _engine(ca_pem, flight)
    assert state == "failed" and len(ends) == 1 and ends[0].kind == "verify_failed", ends
    assert sent == b"\x15\x03\x03\x00\x02\x02\x31", sent.hex()


def test_more_distinct_ca_files_than_the_cache_holds_then_the_first_again(deep):
    """70 distinct CA files (the root plus one unrelated CA each) evict the first one's
    configuration; it is built again with its trust store: the chain of 10 is still taken,
    and the same bytes under another file name share one configuration."""
    flight = flight_of([_der(c) for c in chain_of(deep, 8, True)])
    extra = make_cert("TS Filler", None, ca=True).cert_pem
    files = [deep["root"].cert_pem + extra + b"\n" * i for i in range(70)]   # (the root first)
    plans = []
    for ca_pem in files:
        s = TlsClientSession(TlsSettings(server_name="localhost", seclevel=1, ca_pem=ca_pem,
                                         ca_label="RAM:ca.pem", cipher_suites=(ECDHE_ECDSA_GCM,)))
        s.start()
        plans.append(s._plan.configuration)
    assert len(config._PLANS) <= config._CACHE_MAX
    state, ends, _ = _engine(files[0], flight)
    assert state == "failed" and "-0x7700" in ends[0].reason, ends
    a = TlsClientSession(TlsSettings(server_name="localhost", seclevel=1, ca_pem=files[-1], ca_label="UFS:a.pem",
                                     cipher_suites=(ECDHE_ECDSA_GCM,)))
    a.start()
    assert a._plan.configuration is plans[-1]


@pytest.mark.parametrize("ca_bit", [True, False])
def test_a_self_signed_server_whose_certificate_is_the_ca_file_connects(ca_bit):
    """The CA file is the server's own self-signed certificate (CA bit set, as OpenSSL's
    req -x509 makes, or not): Mbed TLS trusts it as a locally trusted leaf; OpenSSL server,
    real handshake; as LF, CRLF and twice over."""
    me = make_cert("localhost", None, ca=ca_bit, names=("localhost",))
    with TlsServer(ServerIdentity(me)) as server:
        for ca_pem in (me.cert_pem, me.cert_pem.replace(b"\n", b"\r\n"), me.cert_pem * 2):
            settings = TlsSettings(server_name="localhost", seclevel=1, ca_pem=ca_pem, ca_label="RAM:me.pem")
            driver = ClientDriver(TlsClientSession(settings), server.port)
            result = driver.handshake()
            driver.close()
            assert isinstance(result, HandshakeComplete), result


# Was a bug (FIRST_ONLY), fixed: _trust_store add()s each certificate
def test_mbedtls_in_the_engine_trusts_every_certificate_of_the_ca_file(deep):
    """Mbed TLS's own chain walk, not the list python sees: the CA file is an unrelated CA,
    then the 8th intermediate (a host trusting an intermediate; verify.py takes the path).
    9 intermediates are sent, the 8th trusted: Mbed TLS with both in its trust store stops
    there (the chain is taken; the flight then fails on its missing ServerKeyExchange)."""
    ca_pem = make_cert("TS Unrelated", None, ca=True).cert_pem + deep["ints"][7].cert_pem
    flight = flight_of([_der(c) for c in chain_of(deep, 9, True)])
    assert _module(ca_pem, flight) == (0x7700, [UNEXPECTED_MESSAGE])
    assert _module(deep["ints"][7].cert_pem, flight) == (0x7700, [UNEXPECTED_MESSAGE])
    state, ends, sent = _engine(deep["ints"][7].cert_pem, flight)
    assert "-0x7700" in ends[0].reason, ends                  # (the CA alone: taken)
    state, ends, sent = _engine(ca_pem, flight)
    assert state == "failed" and len(ends) == 1 and "-0x7700" in ends[0].reason, ends
    assert alerts_in(sent) == [UNEXPECTED_MESSAGE], sent.hex()


# -- through the pty ------------------------------------------------------------------------------
@pytest.fixture
def route(emulator):
    def add(server, host: str = HOST, port: int = PORT) -> None:
        emulator.router.add_map(host, port, "127.0.0.1", server.port)
    return add


# Was a bug (FIRST_ONLY), fixed: _trust_store add()s each certificate
def test_ec2x_a_ca_bundle_and_a_chain_of_ten_opens(ec2x_strict, route):
    """EC2x, AT+QFUPL of a two-CA bundle (an old root, then the server's root; as CA bundles
    are), the server sending 8 intermediates and its root: the real module's Mbed TLS finds
    the root in its trust store: +QSSLOPEN: 0,0 (as with the root alone in the file)."""
    host, _, _ = ec2x_strict
    root = make_cert("TS E2E Root", None, ca=True)
    chain, parent = [], root
    for i in range(8):
        parent = make_cert(f"TS E2E Int {i + 1}", parent, ca=True)
        chain.insert(0, parent)
    leaf = make_cert("localhost", parent, ca=False, names=("localhost", HOST))
    with TlsServer(ServerIdentity(leaf, *chain, root)) as server:
        route(server)
        trust(host, 0, root.cert_pem, name="UFS:alone.pem")
        assert open_ssl(host, 0, timeout=60) == 0
        assert server.wait_handshake(timeout=30).handshake_done
        close(host)
        old = make_cert("TS E2E Old Root", None, ca=True).cert_pem
        trust(host, 0, old + root.cert_pem, name="UFS:bundle.pem")
        assert open_ssl(host, 0, timeout=60) == 0
        assert server.wait_handshake(timeout=30).handshake_done
        close(host)


@pytest.mark.parametrize("shape", ["expired_root", "expired_root_and_a_renewal_first"])
def test_a_ca_expired_by_the_system_clock_but_valid_at_the_modem_clock(shape):
    """The root and the chain of 10 lie in 2020 (expired by the system clock); the modem
    clock (AT+CCLK) says mid-2020.  Mbed TLS's walk still stops at the trusted root (a
    trusted parent out of its dates is its fallback, still trusted): no -0x3000; the check,
    at the modem clock, takes the chain.  With a renewal of the root (same name and key,
    valid now) listed first, too."""
    from cryptography.hazmat.primitives.asymmetric import ec as _ec
    nb = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
    na = datetime.datetime(2020, 12, 31, tzinfo=datetime.timezone.utc)
    key = _ec.generate_private_key(_ec.SECP256R1())
    root = make_cert("TS Old Root", None, ca=True, not_before=nb, not_after=na, key=key)
    ints, parent = [], root
    for i in range(8):
        parent = make_cert(f"TS Old Int {i + 1}", parent, ca=True, not_before=nb, not_after=na)
        ints.append(parent)
    leaf = make_cert("localhost", parent, ca=False, names=("localhost",), not_before=nb, not_after=na)
    deep = {"root": root, "ints": ints, "leaves": {8: leaf}}
    flight = flight_of([_der(c) for c in chain_of(deep, 8, True)])
    ca_pem = root.cert_pem
    if shape != "expired_root":
        ca_pem = make_cert("TS Old Root", None, ca=True, key=key).cert_pem + root.cert_pem
    s = TlsClientSession(TlsSettings(server_name="localhost", seclevel=1, ca_pem=ca_pem, ca_label="RAM:old.pem",
                                     cipher_suites=(ECDHE_ECDSA_GCM,),
                                     clock=lambda: datetime.datetime(2020, 6, 1, tzinfo=datetime.timezone.utc)))
    s.start()
    ch = b"".join(s.outgoing())
    s.receive(flight(ch))
    sent = b"".join(s.outgoing())
    ends = [e for e in s.events() if isinstance(e, (TlsFailure, HandshakeComplete))]
    assert s.state == "failed" and len(ends) == 1 and "-0x7700" in ends[0].reason, ends
    assert alerts_in(sent) == [UNEXPECTED_MESSAGE], sent.hex()


# Was a bug (FIRST_ONLY, here the CA in cacertex after cacert's), fixed: _trust_store add()s each
def test_ec2x_the_ca_in_cacertex_and_a_chain_of_ten_opens(ec2x_strict, route):
    """AT+QSSLCFG="cacertex" (docs: its certificates are trusted together with cacert's):
    cacert an unrelated CA, cacertex the server's root; the server sends 8 intermediates and
    its root: +QSSLOPEN: 0,0 (the check takes it; Mbed TLS must too)."""
    from tests.e2e.ssl_options_support import cfg
    host, _, _ = ec2x_strict
    root = make_cert("TS Ex Root", None, ca=True)
    chain, parent = [], root
    for i in range(8):
        parent = make_cert(f"TS Ex Int {i + 1}", parent, ca=True)
        chain.insert(0, parent)
    leaf = make_cert("localhost", parent, ca=False, names=("localhost", HOST))
    with TlsServer(ServerIdentity(leaf, *chain, root)) as server:
        route(server)
        assert host.upload("UFS:ex_root.pem", root.cert_pem).endswith(b"OK\r\n")
        trust(host, 0, make_cert("TS Ex Unrelated", None, ca=True).cert_pem, name="UFS:unrelated.pem")
        cfg(host, "cacertex", 0, '"UFS:ex_root.pem"')
        assert open_ssl(host, 0, timeout=60) == 0
        assert server.wait_handshake(timeout=30).handshake_done
        close(host)


@pytest.mark.parametrize("shape, taken", [
    ("as_issued", True),
    ("crlf", True),
    ("spaces_before_each_line_end", True),         # mbedtls_base64_decode skips them
    ("one_space_after_the_header", True),          # mbedtls_pem_read_buffer allows one
    ("indented", False),                           # a space inside a line: -0x002C
    ("tab_indented", False),
    ("no_line_end_after_the_header", False),
    ("a_stray_character", False),
])
def test_the_pem_reader_takes_what_mbedtls_2_28_takes(deep, shape, taken):
    """verify._ca_walk mirrors Mbed TLS 2.28's mbedtls_x509_crt_parse and PEM reader
    (python-mbedtls's CRT.from_PEM decodes in Python, more leniently): what it refuses, the
    module's CA file cannot hold (load_anchors: 552)."""
    from tls_engine.verify import _ca_walk
    pem = deep["root"].cert_pem
    lines = pem.splitlines()
    shaped = {
        "as_issued": pem,
        "crlf": pem.replace(b"\n", b"\r\n"),
        "spaces_before_each_line_end": b"".join(line + (b"\n" if line.startswith(b"-----") else b"  \n")
                                                for line in lines),
        "one_space_after_the_header": pem.replace(b"-----\n", b"----- \n", 1),
        "indented": b"".join(b"    " + line + b"\n" for line in lines),
        "tab_indented": b"".join(b"\t" + line + b"\n" for line in lines),
        "no_line_end_after_the_header": pem.replace(b"-----\n", b"-----", 1),
        "a_stray_character": pem.replace(lines[2], lines[2][:10] + b"*" + lines[2][11:]),
    }[shape]
    ders, refused = _ca_walk(shaped)
    if taken:
        assert ders == (_der(deep["root"]),) and refused == "", refused
    else:
        assert ders == (), ders
