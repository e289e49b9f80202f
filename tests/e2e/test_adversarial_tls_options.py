"""Adversarial: does the emulator honour each AT+QSSLCFG setting the host made, judged from
the SERVER side (Python ssl / `openssl s_server`, independent of mbedtls)?  Version pinning
against servers of one version, seclevel 1/2 with hostile chains (misordered, padded, expired or
forged intermediates, v1 intermediates, huge chains), the name check (CN-only, wildcard, IP
literals), SNI, ALPN limits, PSK key forms, DTLS version mismatch and silence, negotiatetime on
a handshake stalled half-way, session resumption rules, client certificates of another key type,
and the ML302's subset.  Every failure must be the manual's code (EC2x +QSSLOPEN <err> and
AT+QIGETERROR; ML302 -1) with a reason in the log and no traceback (strict fixtures)."""
from __future__ import annotations

import datetime
import socket
import subprocess
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from emulator.testing.peers import (NOW, OpenSslServer, ServerIdentity, TlsServer, make_cert,
                                    openssl_binary)
from emulator.testing.peers.pki import SERVER_NAMES, Issued, utc
from tests.e2e.ssl_options_support import (HOST, PORT, cfg, close, last_error, open_ssl, opened,
                                           s_server_round_trip, trust)

DAY = datetime.timedelta(days=1)


# -- helpers -----------------------------------------------------------------------------------
@pytest.fixture
def modem(ec2x_strict):
    return ec2x_strict


@pytest.fixture
def route(emulator):
    def add(server, host: str = HOST, port: int = PORT) -> None:
        dst = server.address[1] if isinstance(getattr(server, "address", None), tuple) else server.port
        emulator.router.add_map(host, port, "127.0.0.1", dst)
    return add


def ssl_log(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("emulator"))


def no_traceback(caplog) -> None:
    assert not [r for r in caplog.records if r.exc_info], ssl_log(caplog)


def failed_with(host, code: int) -> None:
    assert last_error(host) == code


def identity(leaf: Issued, *chain: Issued) -> ServerIdentity:
    return ServerIdentity(leaf, *chain)


@pytest.fixture(scope="module")
def chain_pki():
    """A root, a good intermediate, an expired intermediate, one whose signature is forged,
    leaves under each, and an unrelated self-signed certificate (all ECDSA P-256)."""
    root = make_cert("Adv Root", None, ca=True, not_before=NOW - 10 * DAY,
                     not_after=NOW + 3650 * DAY)
    inter = make_cert("Adv Inter", root, ca=True)
    expired_inter = make_cert("Adv Expired Inter", root, ca=True, not_before=NOW - 400 * DAY,
                              not_after=NOW - 30 * DAY)
    impostor = make_cert("Adv Impostor", None, ca=True)
    forged_inter = make_cert("Adv Forged Inter", root, ca=True, signing_key=impostor.key)
    return {
        "root": root, "inter": inter, "impostor": impostor,
        "leaf": make_cert("leaf", inter, ca=False, names=(HOST,)),
        "expired_inter": expired_inter,
        "leaf_under_expired": make_cert("leaf2", expired_inter, ca=False, names=(HOST,)),
        "forged_inter": forged_inter,
        "leaf_under_forged": make_cert("leaf3", forged_inter, ca=False, names=(HOST,)),
        "unrelated": make_cert("Unrelated", None, ca=True),
    }


# == sslversion ===================================================================================
@pytest.mark.parametrize("sslversion, server_version", [(3, "TLSv1.1"), (2, "TLSv1.2"), (1, "TLSv1.1")])
def test_pinned_sslversion_against_a_single_version_server_fails_566(modem, route, pki, caplog,
                                                                     sslversion, server_version):
    host, _, _ = modem
    with TlsServer(pki.server, min_version=server_version, max_version=server_version) as server:
        route(server)
        cfg(host, "sslversion", 0, sslversion)
        assert open_ssl(host, 0) == 566
        failed_with(host, 566)
        conn = server.wait_handshake()
        assert not conn.handshake_done
    assert "SSL open 0" in ssl_log(caplog)
    no_traceback(caplog)


@pytest.mark.parametrize("server_version", ["TLSv1", "TLSv1.1"])
def test_sslversion_4_falls_back_to_an_old_only_server(modem, route, pki, server_version):
    host, _, _ = modem
    with TlsServer(pki.server, min_version=server_version, max_version=server_version) as server:
        route(server)
        assert open_ssl(host, 0) == 0
        assert server.wait_handshake().version == server_version
        close(host)


# == seclevel 1: chains ============================================================================
def test_misordered_chain_with_extra_certificates_verifies(modem, route, chain_pki):
    """leaf, an unrelated CA, then the intermediate: the path is built by name, not by order."""
    host, _, _ = modem
    c = chain_pki
    with TlsServer(identity(c["leaf"], c["unrelated"], c["inter"])) as server:
        route(server)
        trust(host, 0, c["root"].cert_pem, name="UFS:advroot.pem")
        cfg(host, "ignorelocaltime", 0, 0)
        assert open_ssl(host, 0) == 0
        assert server.wait_handshake().handshake_done
        close(host)


def test_chain_sent_with_the_root_included_verifies(modem, route, chain_pki):
    host, _, _ = modem
    c = chain_pki
    with TlsServer(identity(c["leaf"], c["inter"], c["root"])) as server:
        route(server)
        trust(host, 0, c["root"].cert_pem, name="UFS:advroot.pem")
        assert open_ssl(host, 0) == 0
        close(host)


def test_missing_intermediate_fails_566(modem, route, chain_pki, caplog):
    host, _, _ = modem
    c = chain_pki
    with TlsServer(identity(c["leaf"])) as server:         # the intermediate is not sent
        route(server)
        trust(host, 0, c["root"].cert_pem, name="UFS:advroot.pem")
        assert open_ssl(host, 0) == 566
        failed_with(host, 566)
        assert not server.wait_handshake().handshake_done
    assert "not signed by UFS:advroot.pem" in ssl_log(caplog)


def test_expired_intermediate_fails_only_with_ignorelocaltime_0(modem, route, chain_pki, caplog):
    host, _, _ = modem
    c = chain_pki
    with TlsServer(identity(c["leaf_under_expired"], c["expired_inter"])) as server:
        route(server)
        trust(host, 0, c["root"].cert_pem, name="UFS:advroot.pem")
        assert open_ssl(host, 0) == 0                      # ignorelocaltime 1 (default)
        close(host)
        cfg(host, "ignorelocaltime", 0, 0)
        assert open_ssl(host, 0) == 566
        failed_with(host, 566)
        # ignoremulticertchainverify does not forgive the leaf's own issuer being expired
        cfg(host, "ignoremulticertchainverify", 0, 1)
        assert open_ssl(host, 0) == 566
    assert "issuer certificate CN=Adv Expired Inter expired at modem clock" in ssl_log(caplog)


def test_forged_intermediate_signature_and_ignoreinvalidcertsign(modem, route, chain_pki):
    host, _, _ = modem
    c = chain_pki
    with TlsServer(identity(c["leaf_under_forged"], c["forged_inter"])) as server:
        route(server)
        trust(host, 0, c["root"].cert_pem, name="UFS:advroot.pem")
        assert open_ssl(host, 0) == 566                    # the intermediate's signature is bad
        cfg(host, "ignoremulticertchainverify", 0, 1)      # above the leaf's issuer: not checked
        assert open_ssl(host, 0) == 0
        close(host)
        cfg(host, "ignoremulticertchainverify", 0, 0)
        cfg(host, "ignoreinvalidcertsign", 0, 1)           # tolerated signature
        assert open_ssl(host, 0) == 0
        close(host)


def test_ignoremulticertchainverify_still_needs_a_ca_issuer(modem, route, chain_pki):
    """A leaf 'issued' by another leaf the server sent (CA=false): no chain at all."""
    host, _, _ = modem
    fake_issuer = make_cert("Fake Issuer", None, ca=False)
    leaf = make_cert("leaf4", fake_issuer, ca=False, names=(HOST,))
    with TlsServer(identity(leaf, fake_issuer)) as server:
        route(server)
        trust(host, 0, chain_pki["root"].cert_pem, name="UFS:advroot.pem")
        cfg(host, "ignoremulticertchainverify", 0, 1)
        assert open_ssl(host, 0) == 566


def _v1_intermediate(tmp_path, root: Issued) -> Issued:
    """A version-1 certificate (no extensions, so no basicConstraints) issued by root: what
    `openssl x509 -req` makes without an extension file."""
    from cryptography.hazmat.primitives.asymmetric import ec
    key = ec.generate_private_key(ec.SECP256R1())
    key_path, csr_path = tmp_path / "v1.key", tmp_path / "v1.csr"
    root_cert, root_key, out = tmp_path / "root.pem", tmp_path / "root.key", tmp_path / "v1.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    root_cert.write_bytes(root.cert_pem)
    root_key.write_bytes(root.key_pem)
    openssl = openssl_binary()
    subprocess.run([openssl, "req", "-new", "-key", str(key_path), "-subj", "/CN=Adv V1 Inter",
                    "-out", str(csr_path)], check=True, capture_output=True)
    subprocess.run([openssl, "x509", "-req", "-in", str(csr_path), "-CA", str(root_cert),
                    "-CAkey", str(root_key), "-set_serial", "7", "-days", "30", "-out", str(out)],
                   check=True, capture_output=True)
    cert = x509.load_pem_x509_certificate(out.read_bytes())
    assert cert.version == x509.Version.v1
    return Issued(cert, key)


# Was a bug, fixed: tls_engine/verify.py _can_issue() accepts ANY version-1 certificate as an
# issuer, also one the server sent; Mbed TLS 2.28 (x509_crt_check_parent: need_ca_bit is waived
# only for 'top', i.e. locally trusted, v1 certificates) and the README/docstring ('v1 anchors
# accepted') allow it only for trust anchors. A server sending leaf + a v1 non-CA certificate
# signed by the trusted root is accepted at seclevel 1 (+QSSLOPEN: 0,0) instead of 566 (python-
# mbedtls with validate_certificates=True and the same root rejects this very chain: TLSError
# 0x2700)
def test_v1_intermediate_sent_by_the_server_is_not_a_ca(modem, route, chain_pki, tmp_path):
    host, _, _ = modem
    root = chain_pki["root"]
    v1 = _v1_intermediate(tmp_path, root)
    leaf = make_cert("leaf5", v1, ca=False, names=(HOST,))
    with TlsServer(identity(leaf, v1)) as server:
        route(server)
        trust(host, 0, root.cert_pem, name="UFS:advroot.pem")
        code = open_ssl(host, 0)
        if code == 0:
            close(host)
        assert code == 566


def test_huge_certificate_chain_is_answered_with_a_code(modem, route, chain_pki, caplog):
    """A server sending ~60 extra certificates (a Certificate message over 16 KiB, several
    records): the open ends with exactly one +QSSLOPEN, 0 or 566, never a traceback or a hang."""
    host, _, _ = modem
    c = chain_pki
    padding = [make_cert(f"Padding {i}", None, ca=True) for i in range(60)]
    with TlsServer(identity(c["leaf"], *padding, c["inter"])) as server:
        route(server)
        trust(host, 0, c["root"].cert_pem, name="UFS:advroot.pem")
        code = open_ssl(host, 0, timeout=30)
        assert code in (0, 566), code
        if code == 0:
            close(host)
        cfg(host, "seclevel", 0, 0)
        code0 = open_ssl(host, 0, timeout=30)
        assert code0 in (0, 566), code0
        if code0 == 0:
            close(host)
    assert b"+QSSLOPEN: 0," in bytes(host.transcript)
    no_traceback(caplog)
    # Both seclevels must agree: what mbedtls can carry is the same whoever checks the chain.
    assert code == code0, (code, code0, ssl_log(caplog))


# Was a bug, fixed: a server Certificate message over Mbed TLS's 16 KiB input record limit fails
# the open with 566 (fine) but the only log reason is 'SSL - The requested feature is not
# available (mbedtls -0x7080)': nothing says it was the server's certificate chain (its size) that
# Mbed TLS could not take, at seclevel 0 and 1 alike (tls_engine/session.py _fail_from_tls_error
# passes Mbed TLS's text through)
def test_huge_certificate_chain_failure_is_explained_in_the_log(modem, route, chain_pki, caplog):
    host, _, _ = modem
    c = chain_pki
    padding = [make_cert(f"Pad {i}", None, ca=True) for i in range(60)]
    with TlsServer(identity(c["leaf"], *padding, c["inter"])) as server:
        route(server)
        code = open_ssl(host, 0, timeout=30)
        if code == 0:
            close(host)
    assert code == 566
    reason = [r.getMessage() for r in caplog.records if "SSL open 0" in r.getMessage()][-1]
    assert "certificate" in reason.lower(), reason


# == host name =====================================================================================
def test_cn_only_certificate_matches_the_dialled_name(modem, route, chain_pki):
    host, _, _ = modem
    leaf = make_cert(HOST, chain_pki["inter"], ca=False)            # no SAN: CN is the name
    with TlsServer(identity(leaf, chain_pki["inter"])) as server:
        route(server)
        trust(host, 0, chain_pki["root"].cert_pem, name="UFS:advroot.pem")
        assert open_ssl(host, 0) == 0
        close(host)
        route(server, host="other.iottest.work")
        assert open_ssl(host, 0, host="other.iottest.work") == 566


def test_san_wins_over_cn(modem, route, chain_pki):
    """CN is the dialled name but the SAN lists another: the name does not match."""
    host, _, _ = modem
    leaf = make_cert(HOST, chain_pki["inter"], ca=False, names=("elsewhere.example",))
    with TlsServer(identity(leaf, chain_pki["inter"])) as server:
        route(server)
        trust(host, 0, chain_pki["root"].cert_pem, name="UFS:advroot.pem")
        assert open_ssl(host, 0) == 566


@pytest.mark.parametrize("dial, ok", [("www.iottest.work", True), ("WWW.IoTTest.Work", True),
                                      ("a.b.iottest.work", False), ("iottest.work", False)])
def test_wildcard_san(modem, route, chain_pki, dial, ok):
    host, _, _ = modem
    leaf = make_cert("wild", chain_pki["inter"], ca=False, names=("*.iottest.work",))
    with TlsServer(identity(leaf, chain_pki["inter"])) as server:
        route(server, host=dial)
        trust(host, 0, chain_pki["root"].cert_pem, name="UFS:advroot.pem")
        code = open_ssl(host, 0, host=dial)
        assert code == (0 if ok else 566)
        if code == 0:
            close(host)


def test_ip_literal_needs_an_ip_san_and_gets_no_sni(modem, emulator, chain_pki):
    host, _, _ = modem
    ip = "203.0.113.7"
    good = make_cert("ipleaf", chain_pki["inter"], ca=False, names=(ip,))
    dns_only = make_cert("dnsleaf", chain_pki["inter"], ca=False, names=(HOST,))
    trust(host, 0, chain_pki["root"].cert_pem, name="UFS:advroot.pem")
    cfg(host, "sni", 0, 1)
    for leaf, expected in ((good, 0), (dns_only, 566)):
        with TlsServer(identity(leaf, chain_pki["inter"])) as server:
            emulator.router.add_map(ip, PORT, "127.0.0.1", server.port)
            assert open_ssl(host, 0, host=ip) == expected
            conn = server.wait_handshake()
            assert conn.client_hello.sni is None
            if expected == 0:
                close(host)


# == seclevel 1/2: client certificates ===========================================================
def test_seclevel_1_answers_a_certificate_request_with_no_certificate(modem, route, pki):
    host, _, _ = modem
    host.upload("UFS:cl.pem", pki.client.cert_pem)
    host.upload("UFS:cl.key", pki.client.key_pem)
    cfg(host, "clientcert", 0, '"UFS:cl.pem"')
    cfg(host, "clientkey", 0, '"UFS:cl.key"')
    with TlsServer(pki.server, client_ca=pki.ca.cert_pem, require_client_cert=False) as server:
        route(server)
        trust(host, 0, pki.ca.cert_pem)                    # seclevel 1: server auth only
        assert open_ssl(host, 0) == 0
        conn = server.wait_handshake()
        assert conn.handshake_done and conn.client_cert_der is None
        close(host)
        cfg(host, "seclevel", 0, 2)                        # now it is sent
        assert open_ssl(host, 0) == 0
        assert "modem client" in server.wait_handshake().client_cert_subject
        close(host)


def test_seclevel_2_with_an_ec_client_certificate(modem, route, pki, caplog):
    host, _, _ = modem
    ca = pki.ca.ca
    from emulator.testing.peers.pki import ECDSA
    leaf = ca.issue_cert("ec-client.example", common_name="ec modem client", key_type=ECDSA)
    host.upload("UFS:ec.pem", leaf.cert_chain_pems[0].bytes())
    host.upload("UFS:ec.key", leaf.private_key_pem.bytes())
    host.upload("UFS:rsa.key", pki.client.key_pem)
    cfg(host, "clientcert", 0, '"UFS:ec.pem"')
    cfg(host, "clientkey", 0, '"UFS:ec.key"')
    with TlsServer(pki.server, client_ca=pki.ca.cert_pem, require_client_cert=True) as server:
        route(server)
        trust(host, 0, pki.ca.cert_pem, seclevel=2)
        assert open_ssl(host, 0) == 0
        assert "ec modem client" in server.wait_handshake().client_cert_subject
        close(host)
        cfg(host, "clientkey", 0, '"UFS:rsa.key"')         # an RSA key for the EC certificate
        assert open_ssl(host, 0) == 552                    # a context that cannot work
        failed_with(host, 552)
        # (the TCP connection is made first; no ClientHello reaches the server)
        assert all(c.client_hello is None for c in server.connections[1:])
    assert "client key does not belong to the client certificate" in ssl_log(caplog)


# == context files ==================================================================================
# Was a bug, fixed: docs/behaviour.md: 'a context that cannot work (seclevel 1 without cacert, a
# configured file that does not exist) 552'; but emulator/sockets/context.py to_tls_settings()
# reads cacertex with material('cacertex', needed=False), so a configured cacertex naming a
# missing file is silently dropped and the open succeeds (+QSSLOPEN: 0,0) instead of 552
def test_configured_cacertex_that_does_not_exist_is_552(modem, route, pki):
    host, _, _ = modem
    with TlsServer(pki.server) as server:
        route(server)
        trust(host, 0, pki.ca.cert_pem)
        cfg(host, "cacertex", 0, '"UFS:no-such-extra.pem"')
        code = open_ssl(host, 0)
        if code == 0:
            close(host)
        assert code == 552


# == ALPN =============================================================================================
def test_alpn_nine_names_is_refused_cleanly(modem, route, pki, caplog):
    """The engine takes at most 8 ALPN names: a 9th must give ERROR at the write or a
    552 open with a reason, never a traceback."""
    host, _, _ = modem
    names = ",".join(f"p{i}" for i in range(9))
    answer = host.at(f'AT+QSSLCFG="alpn",0,"{names}"')
    with TlsServer(pki.server, alpn=["p8", "p0"]) as server:
        route(server)
        if answer == b"\r\nOK\r\n":
            code = open_ssl(host, 0)
            if code == 0:
                conn = server.wait_handshake()
                assert conn.client_hello.alpn == [f"p{i}".encode() for i in range(9)] \
                    or conn.client_hello.alpn == [f"p{i}" for i in range(9)]
                close(host)
            else:
                assert code == 552, code
        else:
            assert answer == b"\r\nERROR\r\n"
    no_traceback(caplog)


def test_alpn_name_longer_than_255_bytes_is_refused_cleanly(modem, route, pki, caplog):
    host, _, _ = modem
    long = "x" * 256
    answer = host.at(f'AT+QSSLCFG="alpn",0,"{long}"')
    with TlsServer(pki.server) as server:
        route(server)
        if answer == b"\r\nOK\r\n":
            code = open_ssl(host, 0)
            assert code in (552, 566), code
        else:
            assert answer == b"\r\nERROR\r\n"
    no_traceback(caplog)


def test_alpn_negotiated_value_is_the_servers_choice(modem, route, pki, caplog):
    host, _, _ = modem
    with TlsServer(pki.server, alpn=["mqtt", "http/1.1"]) as server:
        route(server)
        cfg(host, "alpn", 0, '"x-other,mqtt,http/1.1"')
        assert open_ssl(host, 0) == 0
        conn = server.wait_handshake()
        assert [bytes(p) if not isinstance(p, str) else p.encode() for p in conn.client_hello.alpn] \
            == [b"x-other", b"mqtt", b"http/1.1"]
        assert conn.alpn_selected == "mqtt"
        close(host)
    assert "ALPN mqtt" in ssl_log(caplog)


# == PSK =============================================================================================
PSK_HEX = "00112233445566778899aabbccddeeff"


def psk_server(key_hex: str, identity: str = "modem-1") -> OpenSslServer:
    return OpenSslServer(["-nocert", "-psk", key_hex, "-psk_identity", identity,
                          "-cipher", "PSK:@SECLEVEL=0", "-tls1_2"])


def test_psk_uppercase_hex_key_is_the_same_bytes(modem, route):
    host, _, _ = modem
    with psk_server(PSK_HEX) as server:
        route(server)
        cfg(host, "psk", 0, '"modem-1"', f'"{PSK_HEX.upper()}"')
        assert open_ssl(host, 0) == 0
        s_server_round_trip(host, server, b"upper\n", b"ok\n")
        close(host)


# Was a bug, fixed: emulator/sockets/context.py _psk_key_bytes() uses bytes.fromhex(), which skips
# whitespace: the text key '0011 2233 ' (10 characters, not hex) becomes the 4 bytes 00 11 22 33
# instead of the host's 10 bytes, against docs/behaviour.md 'hex key = its bytes, else the host's
# bytes'; a server holding the 10-byte key refuses (566)
def test_psk_text_key_with_spaces_is_the_hosts_bytes(modem, route):
    host, _, _ = modem
    text = "0011 2233 "
    with psk_server(text.encode().hex()) as server:
        route(server)
        cfg(host, "psk", 0, '"modem-1"', f'"{text}"')
        code = open_ssl(host, 0)
        if code == 0:
            close(host)
        assert code == 0


def test_psk_with_an_empty_key_is_answered_with_a_code(modem, route, caplog):
    host, _, _ = modem
    with psk_server(PSK_HEX) as server:
        route(server)
        answer = host.at('AT+QSSLCFG="psk",0,"modem-1",""')
        if answer == b"\r\nOK\r\n":
            code = open_ssl(host, 0)
            assert code in (552, 566), code
            failed_with(host, code)
        else:
            assert answer == b"\r\nERROR\r\n"
    no_traceback(caplog)


def test_psk_identity_is_sent_as_configured(modem, route, caplog):
    """s_server only warns about an unexpected identity (and goes on with its key): its
    warning names the identity the modem sent."""
    host, _, _ = modem
    with psk_server(PSK_HEX, identity="expected-id") as server:
        route(server)
        cfg(host, "psk", 0, '"other-id"', f'"{PSK_HEX}"')
        assert open_ssl(host, 0) == 0
        server.wait_for_output(rb"got 'other-id' expected 'expected-id'")
        close(host)
    no_traceback(caplog)


# == DTLS ============================================================================================
@pytest.fixture
def dtls(pki):
    servers = []

    def start(*flags: str) -> OpenSslServer:
        cert, key = pki.server.load_args
        server = OpenSslServer(["-cert", cert, "-key", key, *flags, "-cipher", "ALL:@SECLEVEL=0"])
        servers.append(server)
        return server
    yield start
    for server in servers:
        server.stop()


@pytest.mark.parametrize("dtlsversion, flag", [(1, "-dtls1"), (0, "-dtls1_2")])
def test_dtls_version_mismatch_fails_566(modem, route, dtls, caplog, dtlsversion, flag):
    host, _, _ = modem
    server = dtls(flag)
    route(server)
    cfg(host, "dtls", 0, 1)
    cfg(host, "dtlsversion", 0, dtlsversion)
    assert open_ssl(host, 0, timeout=20) == 566
    failed_with(host, 566)
    no_traceback(caplog)


def test_dtls_wrong_ca_fails_566_without_waiting_for_negotiatetime(modem, route, dtls, pki, caplog):
    host, _, _ = modem
    server = dtls("-dtls1_2")
    route(server)
    cfg(host, "dtls", 0, 1)
    trust(host, 0, pki.wrong_ca.cert_pem, name="UFS:wrong.pem")
    assert open_ssl(host, 0, timeout=20) == 566
    assert "not signed by UFS:wrong.pem" in ssl_log(caplog)


def test_dtls_silent_server_gives_569_at_negotiatetime(modem, emulator):
    host, advance, _ = modem
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    try:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", sink.getsockname()[1])
        cfg(host, "dtls", 0, 1)
        cfg(host, "negotiatetime", 0, 10)
        assert host.at(f'AT+QSSLOPEN=1,0,0,"{HOST}",{PORT}') == b"\r\nOK\r\n"
        sink.settimeout(5)
        hello, _ = sink.recvfrom(4096)
        assert hello[0] == 22                              # a DTLS handshake record
        advance(10)
        assert opened(host, 0, timeout=20) == 569
        failed_with(host, 569)
    finally:
        sink.close()


# == negotiatetime on a handshake stalled half-way ================================================
def test_negotiatetime_counts_the_whole_handshake_not_only_the_first_answer(modem, emulator, pki):
    """The server answers the ClientHello with half a record and then stalls: 569 after
    negotiatetime all the same (not a 566, not waiting forever)."""
    host, advance, _ = modem
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    got_hello = threading.Event()

    def serve():
        conn, _ = listener.accept()
        held.append(conn)
        conn.recv(4096)
        conn.sendall(bytes([22, 3, 3, 0x10, 0x00]) + b"\x02\x00\x00")   # a 4 KiB record, 8 bytes of it
        # set once the half record is out, not before: under load the test once ran to its end
        # (569 with no answer at all) and closed `conn` ahead of this sendall (EBADF in the thread)
        got_hello.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", listener.getsockname()[1])
        cfg(host, "negotiatetime", 0, 10)
        assert host.at(f'AT+QSSLOPEN=1,0,0,"{HOST}",{PORT}') == b"\r\nOK\r\n"
        assert got_hello.wait(5)
        advance(9.5)
        assert b"+QSSLOPEN" not in bytes(host.transcript)
        advance(0.5)
        assert opened(host, 0, timeout=20) == 569
        failed_with(host, 569)
    finally:
        listener.close()
        for s in held:
            s.close()


# == session_cache =================================================================================
@pytest.mark.needs_native
def test_session_is_not_resumed_for_another_name_on_the_same_server(modem, route, pki):
    host, _, _ = modem
    with TlsServer(pki.server) as server:
        route(server)
        route(server, host="localhost")
        assert open_ssl(host, 0) == 0
        close(host)
        assert open_ssl(host, 0, host="localhost") == 0
        close(host)
        assert open_ssl(host, 0) == 0
        close(host)
        assert [c.session_reused for c in server.connections] == [False, False, True]


@pytest.mark.needs_native
def test_session_not_resumed_after_the_ca_file_is_replaced_with_the_same_bytes_elsewhere(modem, route, pki):
    """cacert pointed at another file name with the same content: an AT+QSSLCFG write on the
    context, so its sessions are forgotten (behaviour.md)."""
    host, _, _ = modem
    with TlsServer(pki.server) as server:
        route(server)
        host.upload("UFS:ca.pem", pki.ca.cert_pem)
        host.upload("UFS:ca2.pem", pki.ca.cert_pem)
        cfg(host, "seclevel", 0, 1)
        cfg(host, "cacert", 0, '"UFS:ca.pem"')
        for _ in range(2):
            assert open_ssl(host, 0) == 0
            close(host)
        cfg(host, "cacert", 0, '"UFS:ca2.pem"')
        assert open_ssl(host, 0) == 0
        close(host)
        assert [c.session_reused for c in server.connections] == [False, True, False]


@pytest.mark.needs_native
def test_session_not_resumed_after_the_ca_file_is_deleted_and_reuploaded_other(modem, route, pki):
    host, _, _ = modem
    with TlsServer(pki.server) as server:
        route(server)
        host.upload("UFS:ca.pem", pki.ca.cert_pem)
        cfg(host, "seclevel", 0, 1)
        cfg(host, "cacert", 0, '"UFS:ca.pem"')
        assert open_ssl(host, 0) == 0
        close(host)
        assert host.at('AT+QFDEL="UFS:ca.pem"') == b"\r\nOK\r\n"
        assert open_ssl(host, 0) == 552                    # a missing CA is not bypassed by the cache
        failed_with(host, 552)
        host.upload("UFS:ca.pem", pki.wrong_ca.cert_pem)
        assert open_ssl(host, 0) == 566
        assert server.connections[-1].session_reused in (False, None)


@pytest.mark.needs_native
def test_sessions_of_one_context_survive_a_write_on_another(modem, route, pki):
    host, _, _ = modem
    with TlsServer(pki.server) as server:
        route(server)
        assert open_ssl(host, 0) == 0
        close(host)
        cfg(host, "sni", 1, 1)                              # context 1 only
        assert open_ssl(host, 0) == 0
        close(host)
        assert [c.session_reused for c in server.connections] == [False, True]


@pytest.mark.needs_native
def test_renegotiation_1_with_a_certificate_request_at_seclevel_1_keeps_data_flowing(modem, route, pki):
    """Server-initiated renegotiation (s_server 'r') on: the connection stays up and data
    flows; nothing ERROR-level is logged."""
    host, _, _ = modem
    cert, key = pki.server.load_args
    with OpenSslServer(["-cert", cert, "-key", key, "-tls1_2"]) as server:
        route(server)
        cfg(host, "renegotiation", 0, 1)
        assert open_ssl(host, 0) == 0
        server.wait_for_output(rb"CIPHER is")
        mark = server.mark()
        server.write(b"R\n")                                 # HelloRequest + CertificateRequest
        s_server_round_trip(host, server, b"after R\n", b"back\n", since=mark)
        close(host)


# == ML302 ==========================================================================================
@pytest.fixture
def ml(ml302_strict):
    return ml302_strict


def ml_secwrite(host, slot: int, data: bytes) -> None:
    host.at(f"AT+QSECDEL={slot}")
    host.write(f"AT+QSECWRITE={slot}\r")
    host.read_until(b"\r\n> ")
    host.write(data + b"\x1a")
    host.read_until(b"OK\r\n")


def ml_open(host, emulator, server) -> int:
    emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
    assert host.at(f'AT+QSSLOPEN=0,0,"{HOST}",{PORT},0') == b"\r\nOK\r\n"
    code = opened(host, 0, timeout=20)
    if code == 0:
        assert host.at("AT+QSSLCLOSE=0").startswith(b"\r\nOK\r\n")
        host.seen(b"0,CLOSE OK\r\n")
    return code


def test_ml302_pinned_version_against_another_version_is_minus_1(ml, emulator, pki, caplog):
    host, _, _ = ml
    with TlsServer(pki.server, min_version="TLSv1.1", max_version="TLSv1.1") as server:
        assert host.at('AT+QSSLCFG="sslversion",0,3') == b"\r\nOK\r\n"
        assert ml_open(host, emulator, server) == -1
        assert not server.wait_handshake().handshake_done
    no_traceback(caplog)


def test_ml302_does_not_resume_sessions(ml, emulator, pki):
    host, _, _ = ml
    with TlsServer(pki.server) as server:
        for _ in range(2):
            assert ml_open(host, emulator, server) == 0
            server.wait_handshake()
        assert [c.session_reused for c in server.connections] == [False, False]


class PemIdentity:
    """A server identity from PEM bytes: the leaf, its key, then whatever chain is sent."""

    def __init__(self, leaf_pem: bytes, key_pem: bytes, *chain_pems: bytes) -> None:
        self.blob = leaf_pem + b"".join(chain_pems) + key_pem

    def configure_cert(self, ctx) -> None:
        import os
        import tempfile
        with tempfile.NamedTemporaryFile("wb", suffix=".pem", delete=False) as f:
            f.write(self.blob)
        try:
            ctx.load_cert_chain(f.name)
        finally:
            os.unlink(f.name)


def rsa_cert(cn: str, issuer, *, ca: bool, names=(), not_before=None, not_after=None):
    """(cert, key) with an RSA-2048 key (the ML302's suites are RSA key exchange only);
    issuer None = self-signed, else an (cert, key) pair."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    b = (x509.CertificateBuilder().subject_name(name)
         .issuer_name(issuer[0].subject if issuer else name).public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(not_before or NOW - DAY).not_valid_after(not_after or NOW + 365 * DAY)
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if names:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
    cert = b.sign(issuer[1] if issuer else key, hashes.SHA256())
    return cert, key


def pem(obj) -> bytes:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def test_ml302_chain_checks(ml, emulator, caplog):
    host, _, _ = ml
    root = rsa_cert("ML Root", None, ca=True, not_before=NOW - 10 * DAY)
    inter = rsa_cert("ML Inter", root, ca=True)
    old = rsa_cert("ML Expired Inter", root, ca=True, not_before=NOW - 400 * DAY,
                   not_after=NOW - 30 * DAY)
    other = rsa_cert("ML Unrelated", None, ca=True)
    leaf = rsa_cert("ml-leaf", inter, ca=False, names=(HOST,))
    leaf_old = rsa_cert("ml-leaf-old", old, ca=False, names=(HOST,))
    ml_secwrite(host, 0, pem(root[0]))
    assert host.at('AT+QSSLCFG="seclevel",0,1') == b"\r\nOK\r\n"
    misordered = PemIdentity(pem(leaf[0]), pem(leaf[1]), pem(other[0]), pem(inter[0]))
    with TlsServer(misordered) as server:
        assert ml_open(host, emulator, server) == 0
    with TlsServer(PemIdentity(pem(leaf_old[0]), pem(leaf_old[1]), pem(old[0]))) as server:
        assert ml_open(host, emulator, server) == 0          # ignorertctime 1 (default)
        assert host.at('AT+QSSLCFG="ignorertctime",0') == b"\r\nOK\r\n"
        assert ml_open(host, emulator, server) == -1
    with TlsServer(PemIdentity(pem(leaf[0]), pem(leaf[1]))) as server:   # no intermediate
        assert ml_open(host, emulator, server) == -1
    assert "expired at modem clock" in ssl_log(caplog)
    no_traceback(caplog)


def test_ml302_seclevel_2_with_an_empty_key_slot_is_minus_1(ml, emulator, pki, caplog):
    host, _, _ = ml
    ml_secwrite(host, 0, pki.ca.cert_pem)
    ml_secwrite(host, 1, pki.client.cert_pem)
    host.at("AT+QSECDEL=2")
    assert host.at('AT+QSSLCFG="seclevel",0,2') == b"\r\nOK\r\n"
    with TlsServer(pki.server, client_ca=pki.ca.cert_pem, require_client_cert=True) as server:
        assert ml_open(host, emulator, server) == -1
        assert not server.connections                      # nothing dialled
    assert "clientkey" in ssl_log(caplog)


# == resumption offered but declined; renegotiation's certificate ===================================
@pytest.mark.needs_native
def test_a_declined_resumption_is_a_full_verified_handshake(modem, route, pki, caplog):
    """A session cached with a good server; the name then leads to another server (a wrong
    CA's certificate) that does not know the session: the full handshake it answers with must
    be verified like any other."""
    host, _, _ = modem
    trust(host, 0, pki.ca.cert_pem)
    cfg(host, "session_cache", 0, 1)
    with TlsServer(pki.server) as good:
        route(good)
        assert open_ssl(host, 0) == 0
        close(host)
    with TlsServer(pki.wrong_server) as evil:
        route(evil)
        assert open_ssl(host, 0) == 566
        conn = evil.wait_handshake()
        assert not conn.handshake_done
        assert conn.client_hello is not None
    assert "not signed by UFS:ca.pem" in ssl_log(caplog)


@pytest.mark.needs_native
# Was a bug, fixed: with renegotiation 1 and seclevel 1 the server's certificate in a
# server-initiated renegotiation was never checked (the sniffer verifies the first Certificate
# message only, a renegotiation's travels encrypted, and Mbed TLS runs VERIFY_OPTIONAL): a
# renegotiation at a modem clock where the certificate had expired was accepted silently.
def _renegotiate(host, server) -> None:
    server.write(b"r\n")
    host.seen(b'+QSSLURC: "closed",0\r\n', 5)


def test_renegotiation_certificate_is_verified_like_the_first(modem, route, pki, caplog):
    """The same certificate, verified again at the modem clock of the renegotiation."""
    host, _, _ = modem
    windowed = pki.issue_window("reneg-2020s", datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc),
                                datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc))
    cert, key = windowed.load_args
    with OpenSslServer(["-cert", cert, "-key", key, "-tls1_2"]) as server:
        route(server)
        trust(host, 0, pki.ca.cert_pem)
        cfg(host, "ignorelocaltime", 0, 0)
        cfg(host, "renegotiation", 0, 1)
        assert host.at('AT+CCLK="26/06/01,00:00:00+00"') == b"\r\nOK\r\n"
        assert open_ssl(host, 0) == 0
        server.wait_for_output(rb"CIPHER is")
        assert host.at('AT+CCLK="31/01/01,00:00:00+00"') == b"\r\nOK\r\n"
        _renegotiate(host, server)
    assert "renegotiation: server certificate expired at modem clock 2031" in ssl_log(caplog)
    assert host.at("AT+QSSLCLOSE=0") == b"\r\nOK\r\n"


def test_renegotiation_verifies_the_whole_chain_again_not_only_the_leaf(modem, route, tmp_path, caplog):
    """The chain of the first handshake, verified again at the modem clock of the renegotiation:
    an intermediate that expired meanwhile ends the socket though the leaf and the root are
    still valid.  (A mutation pass: re-checking the leaf's dates alone went unnoticed.)"""
    host, _, _ = modem
    root = make_cert("reneg root", None, ca=True, not_before=utc(2020), not_after=utc(2040))
    inter = make_cert("reneg intermediate", root, ca=True, not_before=utc(2020), not_after=utc(2028))
    leaf = make_cert("reneg leaf", inter, ca=False, names=SERVER_NAMES, not_before=utc(2020),
                     not_after=utc(2035))
    (tmp_path / "leaf.pem").write_bytes(leaf.cert_pem)
    (tmp_path / "leaf.key").write_bytes(leaf.key_pem)
    (tmp_path / "chain.pem").write_bytes(inter.cert_pem)
    with OpenSslServer(["-cert", str(tmp_path / "leaf.pem"), "-key", str(tmp_path / "leaf.key"),
                        "-cert_chain", str(tmp_path / "chain.pem"), "-tls1_2"]) as server:
        route(server)
        trust(host, 0, root.cert_pem, name="UFS:reneg-root.pem")
        cfg(host, "ignorelocaltime", 0, 0)
        cfg(host, "renegotiation", 0, 1)
        assert host.at('AT+CCLK="26/06/01,00:00:00+00"') == b"\r\nOK\r\n"
        assert open_ssl(host, 0) == 0
        server.wait_for_output(rb"CIPHER is")
        assert host.at('AT+CCLK="29/01/01,00:00:00+00"') == b"\r\nOK\r\n"   # intermediate expired
        _renegotiate(host, server)
    assert "renegotiation: " in ssl_log(caplog) and "2029" in ssl_log(caplog), ssl_log(caplog)
    assert host.at("AT+QSSLCLOSE=0") == b"\r\nOK\r\n"


def test_renegotiation_keeps_a_valid_certificate_and_data_flows(modem, route, pki):
    host, _, _ = modem
    cert, key = pki.server.load_args
    with OpenSslServer(["-cert", cert, "-key", key, "-tls1_2"]) as server:
        route(server)
        trust(host, 0, pki.ca.cert_pem)
        cfg(host, "renegotiation", 0, 1)
        assert open_ssl(host, 0) == 0
        server.wait_for_output(rb"CIPHER is")
        server.write(b"r\n")
        assert b"closed" not in host.quiet_for(0.5)
        s_server_round_trip(host, server, b"after renegotiation\n", b"still here\n")
        assert host.at("AT+QSSLCLOSE=0") == b"\r\nOK\r\n"


def test_a_certificate_changed_in_a_renegotiation_is_refused(modem, route, pki, emulator, caplog):
    """What the first handshake verified is the certificate the session must keep: here the
    session's record of it (_first_leaf) is swapped, as if the server had sent another one."""
    from emulator.sockets.service import ssl_service

    host, _, port = modem
    cert, key = pki.server.load_args
    with OpenSslServer(["-cert", cert, "-key", key, "-tls1_2"]) as server:
        route(server)
        trust(host, 0, pki.ca.cert_pem)
        cfg(host, "renegotiation", 0, 1)
        assert open_ssl(host, 0) == 0
        server.wait_for_output(rb"CIPHER is")
        other = x509.load_pem_x509_certificate(pki.issue_window(
            "reneg-other", datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc),
            datetime.datetime(2040, 1, 1, tzinfo=datetime.timezone.utc)).cert_pem)
        emulator.run(lambda: setattr(ssl_service(port.modem).sockets[0].session, "_first_leaf",
                                     other.public_bytes(serialization.Encoding.DER)))
        _renegotiate(host, server)
    assert "the server changed its certificate in a renegotiation" in ssl_log(caplog)
    assert host.at("AT+QSSLCLOSE=0") == b"\r\nOK\r\n"


def test_sslversion_4_against_a_tls13_only_server_fails_566(modem, route, pki, caplog):
    host, _, _ = modem
    with TlsServer(pki.server, min_version="TLSv1.3") as server:
        route(server)
        assert open_ssl(host, 0) == 566
        failed_with(host, 566)
        assert not server.wait_handshake().handshake_done
    no_traceback(caplog)


def test_seclevel_2_client_chain_with_intermediate_reaches_the_server(modem, route, pki):
    """clientcert = leaf + intermediate; the server trusts only the root: the intermediate
    must be sent in the Certificate message."""
    host, _, _ = modem
    leaf = pki.intermediate.ca.issue_cert("chain-client.example", common_name="chained client")
    assert len(leaf.cert_chain_pems) == 2
    host.upload("UFS:cc.pem", b"".join(p.bytes() for p in leaf.cert_chain_pems))
    host.upload("UFS:cc.key", leaf.private_key_pem.bytes())
    cfg(host, "clientcert", 0, '"UFS:cc.pem"')
    cfg(host, "clientkey", 0, '"UFS:cc.key"')
    with TlsServer(pki.server, client_ca=pki.ca.cert_pem, require_client_cert=True) as server:
        route(server)
        trust(host, 0, pki.ca.cert_pem, seclevel=2)
        assert open_ssl(host, 0) == 0
        assert "chained client" in server.wait_handshake().client_cert_subject
        close(host)


@pytest.mark.parametrize("what", ["encrypted_key", "cert_is_a_key", "key_is_a_cert"])
def test_seclevel_2_unusable_client_material_is_552(modem, route, pki, caplog, what):
    host, _, _ = modem
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    key = load_pem_private_key(pki.client.key_pem, None)
    encrypted = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.BestAvailableEncryption(b"secret"))
    cert_data, key_data = {
        "encrypted_key": (pki.client.cert_pem, encrypted),
        "cert_is_a_key": (pki.client.key_pem, pki.client.key_pem),
        "key_is_a_cert": (pki.client.cert_pem, pki.client.cert_pem),
    }[what]
    host.upload("UFS:m.pem", cert_data)
    host.upload("UFS:m.key", key_data)
    cfg(host, "clientcert", 0, '"UFS:m.pem"')
    cfg(host, "clientkey", 0, '"UFS:m.key"')
    with TlsServer(pki.server, client_ca=pki.ca.cert_pem, require_client_cert=True) as server:
        route(server)
        trust(host, 0, pki.ca.cert_pem, seclevel=2)
        assert open_ssl(host, 0) == 552
        failed_with(host, 552)
        assert all(c.client_hello is None for c in server.connections)
    assert "SSL open 0" in ssl_log(caplog)
    no_traceback(caplog)


def test_ml302_name_mismatch_and_suite_mismatch_are_minus_1(ml, emulator, pki, caplog):
    host, _, _ = ml
    ml_secwrite(host, 0, pki.ca.cert_pem)
    assert host.at('AT+QSSLCFG="seclevel",0,1') == b"\r\nOK\r\n"
    with TlsServer(pki.server) as server:
        emulator.router.add_map("nomatch.example", PORT, "127.0.0.1", server.port)
        assert host.at(f'AT+QSSLOPEN=0,0,"nomatch.example",{PORT},0') == b"\r\nOK\r\n"
        assert opened(host, 0, timeout=20) == -1
        assert ml_open(host, emulator, server) == 0          # the certificate's own name
    assert host.at('AT+QSSLCFG="ciphersuite",0,"0X0035"') == b"\r\nOK\r\n"
    with TlsServer(pki.server, ciphers="ECDHE+AESGCM") as server:   # no RSA key exchange
        assert ml_open(host, emulator, server) == -1
    text = ssl_log(caplog)
    assert "does not match 'nomatch.example'" in text and "no shared cipher" in text
    no_traceback(caplog)


# (review of the renegotiation check) A resumed session has no clear-text Certificate, a PSK
# session none at all: their renegotiations were refused as 'certificate changed'.
def test_a_resumed_session_can_be_renegotiated(modem, route, pki):
    host, _, _ = modem
    cert, key = pki.server.load_args
    with OpenSslServer(["-cert", cert, "-key", key, "-tls1_2"]) as server:
        route(server)
        trust(host, 0, pki.ca.cert_pem)
        cfg(host, "renegotiation", 0, 1)
        cfg(host, "session_cache", 0, 1)
        assert open_ssl(host, 0) == 0
        server.wait_for_output(rb"CIPHER is")
        close(host)
        assert open_ssl(host, 0) == 0
        server.wait_for_output(rb"Reused session-id", 5)
        server.write(b"r\n")
        assert b"closed" not in host.quiet_for(1.0)
        close(host)


def test_a_psk_session_at_seclevel_1_can_be_renegotiated(modem, route, pki):
    host, _, _ = modem
    psk_hex = "00112233445566778899aabbccddeeff"
    with OpenSslServer(["-nocert", "-psk", psk_hex, "-psk_identity", "modem-1",
                        "-cipher", "PSK:@SECLEVEL=0", "-tls1_2"]) as server:
        route(server)
        trust(host, 0, pki.ca.cert_pem)
        cfg(host, "renegotiation", 0, 1)
        cfg(host, "psk", 0, '"modem-1"', f'"{psk_hex}"')
        assert open_ssl(host, 0) == 0
        server.wait_for_output(rb"CIPHER is \S*PSK")
        server.write(b"r\n")
        assert b"closed" not in host.quiet_for(1.0)
        close(host)
