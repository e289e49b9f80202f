"""AT+QSSLCFG "seclevel", "cacert", "cacertex", "clientcert", "clientkey",
"ignoremulticertchainverify", "ignoreinvalidcertsign", "ignorelocaltime" (with AT+CCLK), and a
BG96's "checkhost" and "ignorecertchain" (an EC2x profile with the BG96's option list)
through the pty, against OpenSSL servers (emulator.testing.peers.TlsServer) that record whether the
handshake completed and which client certificate they got."""
from __future__ import annotations

import logging
import re
import time
from datetime import datetime, timedelta, timezone

import pytest

from emulator.modem.profile import PROFILE_DIR
from emulator.testing.peers import TlsServer, make_cert, utc
from tests.e2e.ssl_options_support import HOST, PORT, cfg, close, open_ssl, trust


def client_identity(modem, pki, ctx: int) -> None:
    """The shared PKI's client certificate and key uploaded and set on context ctx."""
    modem.upload("UFS:client.pem", pki.client.cert_pem)
    modem.upload("UFS:client.key", pki.client.key_pem)
    cfg(modem, "clientcert", ctx, '"UFS:client.pem"')
    cfg(modem, "clientkey", ctx, '"UFS:client.key"')


def reasons(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.name == "emulator.ssl")


# -- seclevel / cacert / clientcert / clientkey ----------------------------------------------------
def test_seclevel_0_checks_nothing_1_checks_the_server(ec2x, net, pki):
    with TlsServer(pki.wrong_server) as server:        # signed by a CA the modem does not trust
        net(server)
        assert open_ssl(ec2x, 0) == 0                  # seclevel 0: accepted
        assert server.wait_handshake().handshake_done
        close(ec2x)
        trust(ec2x, 0, pki.ca.cert_pem)
        assert open_ssl(ec2x, 0) == 566                # seclevel 1: refused
        conn = server.wait_handshake()
        assert not conn.handshake_done and conn.handshake_error   # the modem's alert ended it
    with TlsServer(pki.server) as server:
        net(server)
        assert open_ssl(ec2x, 0) == 0                  # same context, the right CA's server
        assert server.wait_handshake().handshake_done
        close(ec2x)


def test_seclevel_2_presents_the_client_certificate(ec2x, net, pki):
    client_identity(ec2x, pki, 1)
    with TlsServer(pki.server, client_ca=pki.ca.cert_pem, require_client_cert=True) as server:
        net(server)
        trust(ec2x, 1, pki.ca.cert_pem, seclevel=2)
        assert open_ssl(ec2x, 1) == 0
        conn = server.wait_handshake()
        close(ec2x)
        assert "modem client" in conn.client_cert_subject
        assert conn.client_cert_der is not None
        cfg(ec2x, "seclevel", 1, 1)                    # server-only: no certificate sent
        assert open_ssl(ec2x, 1) == 566
        assert server.wait_handshake().client_cert_der is None


def _encrypted(key_pem: bytes, password: bytes, traditional: bool = False) -> bytes:
    """The key as an encrypted PEM: PKCS#8 (BEGIN ENCRYPTED PRIVATE KEY) or OpenSSL's
    traditional form (Proc-Type: 4,ENCRYPTED)."""
    from cryptography.hazmat.primitives import serialization
    key = serialization.load_pem_private_key(key_pem, password=None)
    form = serialization.PrivateFormat.TraditionalOpenSSL if traditional else serialization.PrivateFormat.PKCS8
    return key.private_bytes(serialization.Encoding.PEM, form, serialization.BestAvailableEncryption(password))


@pytest.mark.parametrize("traditional", [False, True], ids=["pkcs8", "traditional"])
def test_seclevel_2_with_an_encrypted_client_key_and_its_password(ec2x, net, pki, traditional):
    """A real EG25-G's "clientkey",<ctx>,<path>,<key_pwd> (its test form; the note 1.1 has
    no password): the key decrypted at the open.  No password, or a wrong one: the key
    cannot be read: 552 (as a key that does not parse).  The query shows the path only."""
    ec2x.upload("UFS:client.pem", pki.client.cert_pem)
    assert b"BEGIN" in (enc := _encrypted(pki.client.key_pem, b"s3cret pass", traditional))
    ec2x.upload("UFS:client.key", enc)
    cfg(ec2x, "clientcert", 1, '"UFS:client.pem"')
    with TlsServer(pki.server, client_ca=pki.ca.cert_pem, require_client_cert=True) as server:
        net(server)
        trust(ec2x, 1, pki.ca.cert_pem, seclevel=2)
        cfg(ec2x, "clientkey", 1, '"UFS:client.key"')                      # no password
        assert open_ssl(ec2x, 1) == 552
        cfg(ec2x, "clientkey", 1, '"UFS:client.key"', '"wrong"')
        assert open_ssl(ec2x, 1) == 552
        assert not any(c.handshake_done for c in server.connections)       # no handshake made
        cfg(ec2x, "clientkey", 1, '"UFS:client.key"', '"s3cret pass"')
        assert ec2x.at('AT+QSSLCFG="clientkey",1') == b'\r\n+QSSLCFG: "clientkey",1,"UFS:client.key"\r\n\r\nOK\r\n'
        assert open_ssl(ec2x, 1) == 0
        conn = server.wait_handshake()
        close(ec2x)
        assert "modem client" in conn.client_cert_subject
        cfg(ec2x, "clientkey", 1, '"UFS:client.key"')                      # written again: no password
        assert open_ssl(ec2x, 1) == 552


def test_a_key_password_for_a_clear_key_is_not_needed_and_bad_forms_are_refused(ec2x, net, pki):
    client_identity(ec2x, pki, 1)
    with TlsServer(pki.server, client_ca=pki.ca.cert_pem, require_client_cert=True) as server:
        net(server)
        trust(ec2x, 1, pki.ca.cert_pem, seclevel=2)
        cfg(ec2x, "clientkey", 1, '"UFS:client.key"', '"unused"')
        assert open_ssl(ec2x, 1) == 0
        assert "modem client" in server.wait_handshake().client_cert_subject
        close(ec2x)
    for line in ('AT+QSSLCFG="clientkey",1,"UFS:client.key","pwd",1',        # one too many
                 'AT+QSSLCFG="clientcert",1,"UFS:client.pem","pwd"',         # clientkey only
                 'AT+QSSLCFG="clientkey",1,"UFS:client.key","' + "p" * 256 + '"'):
        assert ec2x.at(line) == b"\r\nERROR\r\n", line
    assert ec2x.at('AT+QSSLCFG="clientcert",1') == b'\r\n+QSSLCFG: "clientcert",1,"UFS:client.pem"\r\n\r\nOK\r\n'


def test_seclevel_2_sends_nothing_unless_asked(ec2x, net, pki):
    client_identity(ec2x, pki, 0)
    with TlsServer(pki.server) as server:              # no CertificateRequest
        net(server)
        trust(ec2x, 0, pki.ca.cert_pem, seclevel=2)
        assert open_ssl(ec2x, 0) == 0
        conn = server.wait_handshake()
        close(ec2x)
    assert conn.client_cert_der is None


def test_seclevel_2_with_no_client_pair_set_needs_one_only_when_the_server_does(ec2x, net, pki):
    """The note (sec. 4, item 3): the client certificate and key have to be uploaded when
    the server requires client authentication ("SSLVerifyClient required").  seclevel 2 with
    neither set: a server that asks for none is reached (the server still verified); one that
    asks but does not insist gets an empty Certificate and goes on; one that requires it ends
    the handshake (566).  Half a pair, or a path set to a missing file, is 552 before any TCP.
    (Was 552 at every open whatever the server: a Cat-1 ESP-IDF driver that verifies servers
    at seclevel 2 and has no client certificate could never connect.)"""
    trust(ec2x, 1, pki.ca.cert_pem, seclevel=2)
    with TlsServer(pki.server) as server:              # no CertificateRequest
        net(server)
        assert open_ssl(ec2x, 1) == 0
        assert server.wait_handshake().client_cert_der is None
        close(ec2x)
    with TlsServer(pki.server, client_ca=pki.ca.cert_pem) as server:    # asks, optional
        net(server)
        assert open_ssl(ec2x, 1) == 0
        conn = server.wait_handshake()
        assert conn.handshake_done and conn.client_cert_der is None
        close(ec2x)
    with TlsServer(pki.server, client_ca=pki.ca.cert_pem, require_client_cert=True) as server:
        net(server)
        assert open_ssl(ec2x, 1) == 566
        assert server.wait_handshake().client_cert_der is None
    with TlsServer(pki.wrong_server) as server:        # seclevel 2 still verifies the server
        net(server)
        assert open_ssl(ec2x, 1) == 566
    ec2x.upload("UFS:client.pem", pki.client.cert_pem)
    cfg(ec2x, "clientcert", 1, '"UFS:client.pem"')     # a certificate without its key
    with TlsServer(pki.server) as server:
        net(server)
        assert open_ssl(ec2x, 1) == 552
        cfg(ec2x, "clientkey", 1, '"UFS:nowhere.key"')  # a key path naming no file
        assert open_ssl(ec2x, 1) == 552
        time.sleep(0.1)
        assert server.connections == []                 # (refused before any TCP)


def test_intermediate_chain_verifies_against_the_root(ec2x, net, pki):
    assert pki.chained.chain_pem.count(b"BEGIN CERTIFICATE") == 2        # leaf + intermediate
    with TlsServer(pki.chained) as server:
        net(server)
        trust(ec2x, 0, pki.ca.cert_pem)                # the root only
        assert open_ssl(ec2x, 0) == 0
        close(ec2x)
        trust(ec2x, 0, pki.wrong_ca.cert_pem, name="UFS:wrong.pem")
        assert open_ssl(ec2x, 0) == 566


def test_cacertex_adds_trust_anchors(ec2x, net, pki, caplog):
    """Decision (emulator/sockets/context.py): cacertex is concatenated to cacert, both are
    anchors; it is only read when seclevel >= 1 and cacert is set."""
    caplog.set_level(logging.INFO, logger="emulator.ssl")
    ec2x.upload("UFS:extra.pem", pki.ca.cert_pem)
    with TlsServer(pki.server) as server:
        net(server)
        trust(ec2x, 0, pki.wrong_ca.cert_pem, name="UFS:wrong.pem")
        assert open_ssl(ec2x, 0) == 566                # cacert alone: not the server's CA
        cfg(ec2x, "cacertex", 0, '"UFS:extra.pem"')
        assert open_ssl(ec2x, 0) == 0                  # cacertex adds it
        close(ec2x)
        assert ec2x.at('AT+QSSLCFG="cacertex",0') == b'\r\n+QSSLCFG: "cacertex",0,"UFS:extra.pem"\r\n\r\nOK\r\n'
        cfg(ec2x, "cacert", 0, '""')                   # cacertex without cacert: bad config
        assert open_ssl(ec2x, 0) == 552
    assert "server certificate not signed by UFS:wrong.pem (" in reasons(caplog)


# -- ignoremulticertchainverify ------------------------------------------------------------------
def test_ignoremulticertchainverify_skips_the_chain_above_the_leaf_issuer(ec2x, net, pki, caplog):
    caplog.set_level(logging.INFO, logger="emulator.ssl")
    with TlsServer(pki.chained) as server:
        net(server)
        trust(ec2x, 0, pki.wrong_ca.cert_pem)          # the chain's root is not trusted
        assert open_ssl(ec2x, 0) == 566
        cfg(ec2x, "ignoremulticertchainverify", 0, 1)
        assert open_ssl(ec2x, 0) == 0                  # the leaf's sent issuer signed it: enough
        close(ec2x)
        net(server, host="not-in-the-cert.example")    # ...but the name is still checked
        assert open_ssl(ec2x, 0, host="not-in-the-cert.example") == 566
    with TlsServer(pki.wrong_server) as server:        # a leaf whose issuer nobody sent
        net(server)
        trust(ec2x, 0, pki.ca.cert_pem, name="UFS:root.pem")
        assert open_ssl(ec2x, 0) == 566
    text = reasons(caplog)
    assert "does not match 'not-in-the-cert.example'" in text and "not signed by" in text


# -- ignoreinvalidcertsign ------------------------------------------------------------------------
@pytest.fixture
def forged(tmp_path):
    """root CA, and a leaf for HOST carrying root's name as issuer but signed by another key."""
    root = make_cert("Options Root", None, ca=True)
    impostor = make_cert("Impostor", None, ca=True)
    leaf = make_cert("leaf", root, ca=False, names=(HOST,), signing_key=impostor.key)
    cert, key = tmp_path / "forged.pem", tmp_path / "forged.key"
    cert.write_bytes(leaf.cert_pem)
    key.write_bytes(leaf.key_pem)
    return root, impostor, (str(cert), str(key))


def test_ignoreinvalidcertsign_tolerates_a_bad_signature_only(ec2x, net, forged, caplog):
    caplog.set_level(logging.INFO, logger="emulator.ssl")
    root, impostor, files = forged
    with TlsServer(files) as server:
        net(server)
        trust(ec2x, 0, root.cert_pem)
        assert open_ssl(ec2x, 0) == 566                # signature does not verify
        cfg(ec2x, "ignoremulticertchainverify", 0, 1)  # the other relaxation does not forgive it
        assert open_ssl(ec2x, 0) == 566
        cfg(ec2x, "ignoremulticertchainverify", 0, 0)
        cfg(ec2x, "ignoreinvalidcertsign", 0, 1)
        assert open_ssl(ec2x, 0) == 0
        close(ec2x)
        net(server, host="other.example")              # the name is still checked
        assert open_ssl(ec2x, 0, host="other.example") == 566
        trust(ec2x, 0, impostor.cert_pem, name="UFS:impostor.pem")
        assert open_ssl(ec2x, 0) == 566                # the issuer must still be an anchor
    assert "does not match 'other.example'" in reasons(caplog)


# -- ignorelocaltime and the modem clock ------------------------------------------------------------
def test_ignorelocaltime_0_uses_the_modem_clock(ec2x, net, pki, caplog):
    caplog.set_level(logging.INFO, logger="emulator.ssl")
    now = datetime.now(timezone.utc)
    current = pki.issue_window("options-now", now - timedelta(days=1), now + timedelta(days=30))
    with TlsServer(current) as server:                 # valid now at the computer's clock
        net(server)
        trust(ec2x, 0, pki.ca.cert_pem)
        cfg(ec2x, "ignorelocaltime", 0, 0)
        assert open_ssl(ec2x, 0) == 0
        close(ec2x)
        assert ec2x.at('AT+CCLK="99/01/01,00:00:00+00"') == b"\r\nOK\r\n"   # modem in 2099
        assert open_ssl(ec2x, 0) == 566
        cfg(ec2x, "ignorelocaltime", 0, 1)             # dates ignored
        assert open_ssl(ec2x, 0) == 0
        close(ec2x)
    assert "at modem clock 2099-01-01" in reasons(caplog)


def test_ignorelocaltime_0_accepts_an_old_certificate_at_an_old_modem_clock(ec2x, net, pki):
    old = pki.issue_window("options-2019", utc(2019, 1, 1), utc(2020, 1, 1))
    with TlsServer(old) as server:                     # expired at the computer's clock
        net(server)
        trust(ec2x, 0, pki.ca.cert_pem)
        cfg(ec2x, "ignorelocaltime", 0, 0)
        assert open_ssl(ec2x, 0) == 566
        assert ec2x.at('AT+CCLK="19/06/01,12:00:00+32"') == b"\r\nOK\r\n"
        assert open_ssl(ec2x, 0) == 0
        close(ec2x)
        assert ec2x.at('AT+CCLK="20/06/01,12:00:00+00"') == b"\r\nOK\r\n"
        assert open_ssl(ec2x, 0) == 566
        cfg(ec2x, "ignorelocaltime", 0, 1)
        assert open_ssl(ec2x, 0) == 0
        close(ec2x)


# -- a BG96's "checkhost" and "ignorecertchain" (docs/behaviour.md, "BG96 options") ---------------
BG96_OPTIONS = ("sslversion", "ciphersuite", "cacert", "clientcert", "clientkey", "seclevel", "sni",
                "checkhost", "ignorecertchain", "ignorelocaltime", "negotiatetime")


def bg96_profile(tmp_path, verify_hostname: bool = True) -> str:
    """ec2x.toml with a BG96's AT+QSSLCFG options (and ssl.verify_hostname as given)."""
    text = (PROFILE_DIR / "ec2x.toml").read_text()
    listed = ", ".join(f'"{o}"' for o in BG96_OPTIONS)
    text, n = re.subn(r"options = \[[^\]]*\]", f"options = [{listed}]", text, count=1)
    assert n == 1
    text, n = re.subn(r"verify_hostname = true", f"verify_hostname = {str(verify_hostname).lower()}", text, count=1)
    assert n == 1
    (tmp_path / "bg96.toml").write_text(text)
    return str(tmp_path / "bg96.toml")


@pytest.fixture
def bg96(open_modem, emulator, tmp_path):
    """A modem on bg96_profile(), PDP context 1 up; route(server, host) maps host:PORT to the
    server."""
    host, _ = open_modem(bg96_profile(tmp_path))
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"

    def route(server, name: str = HOST) -> None:
        emulator.router.add_map(name, PORT, "127.0.0.1", server.port)
    return host, route


def bg96_trust(modem, ca_pem: bytes) -> None:
    """trust() on context 0 without "session_cache", which a BG96 does not have (a changed
    context forgets its sessions: each step below is a full handshake)."""
    trust(modem, 0, ca_pem, session_cache=False)


def test_bg96_checkhost_decides_whether_the_dialled_name_is_checked(bg96, pki, caplog):
    modem, route = bg96
    caplog.set_level(logging.INFO, logger="emulator.ssl")
    with TlsServer(pki.server) as server:
        route(server)
        route(server, "other.example")                 # a name the certificate does not carry
        bg96_trust(modem, pki.ca.cert_pem)
        assert modem.at('AT+QSSLCFG="checkhost",0') == b'\r\n+QSSLCFG: "checkhost",0,1\r\n\r\nOK\r\n'
        assert open_ssl(modem, 0, host="other.example") == 566    # checked by default
        assert open_ssl(modem, 0) == 0                 # the name it carries
        close(modem)
        cfg(modem, "checkhost", 0, 0)
        assert open_ssl(modem, 0, host="other.example") == 0
        close(modem)
        cfg(modem, "checkhost", 0, 1)
        assert open_ssl(modem, 0, host="other.example") == 566
        cfg(modem, "seclevel", 0, 0)                   # checkhost 1, but nothing is checked
        assert open_ssl(modem, 0, host="other.example") == 0      # at seclevel 0
        close(modem)
    assert "does not match 'other.example'" in reasons(caplog)


def test_bg96_checkhost_default_is_the_profiles_verify_hostname(open_modem, emulator, tmp_path, pki):
    """A BG96 profile that says verify_hostname = false starts every context with checkhost 0
    (and AT+QSSLCFG turns the check on per context)."""
    modem, _ = open_modem(bg96_profile(tmp_path, verify_hostname=False))
    assert modem.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
    for ctx in range(6):
        assert modem.at(f'AT+QSSLCFG="checkhost",{ctx}') == b'\r\n+QSSLCFG: "checkhost",%d,0\r\n\r\nOK\r\n' % ctx
    with TlsServer(pki.server) as server:
        emulator.router.add_map("other.example", PORT, "127.0.0.1", server.port)
        bg96_trust(modem, pki.ca.cert_pem)
        assert open_ssl(modem, 0, host="other.example") == 0
        close(modem)
        cfg(modem, "checkhost", 0, 1)
        assert open_ssl(modem, 0, host="other.example") == 566


def test_bg96_ignorecertchain_skips_the_chain_not_the_dates_or_the_name(bg96, pki, caplog):
    modem, route = bg96
    caplog.set_level(logging.INFO, logger="emulator.ssl")
    with TlsServer(pki.wrong_server) as server:        # signed by a CA the modem does not trust
        route(server)
        route(server, "other.example")
        bg96_trust(modem, pki.ca.cert_pem)
        assert open_ssl(modem, 0) == 566
        cfg(modem, "ignorecertchain", 0, 1)
        assert open_ssl(modem, 0) == 0                 # whoever signed it
        assert server.wait_handshake().handshake_done
        close(modem)
        cfg(modem, "checkhost", 0, 1)
        assert open_ssl(modem, 0, host="other.example") == 566    # the name is still checked
    old = pki.issue_window("bg96-2019", utc(2019, 1, 1), utc(2020, 1, 1), ca=pki.wrong_ca)
    with TlsServer(old) as server:                     # expired at the modem's clock
        route(server)
        cfg(modem, "ignorelocaltime", 0, 0)
        assert open_ssl(modem, 0) == 566               # the leaf's dates are still checked
        cfg(modem, "ignorelocaltime", 0, 1)
        assert open_ssl(modem, 0) == 0
        close(modem)
    assert "does not match 'other.example'" in reasons(caplog)
