"""Issue 9, the SSL command items: what independent hosts and hostile inputs broke in
AT+QSSLCFG / AT+QSSLOPEN / AT+QSSLRECV / AT+QSSLSTATE, the session cache, the profile and
--demo, each shown through the pty (or at the engine's API where only it can show it)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from emulator.io.app import BackgroundEmulator
from emulator.modem.profile import PROFILE_DIR, ProfileError, load_profile
from emulator.testing.engine_client import ClientDriver
from emulator.testing.host import Host
from emulator.testing.peers import OpenSslServer, TlsServer, default_pki
from tests.e2e.ssl_options_support import HOST, PORT, cfg, close, open_ssl, opened
from tls_engine import HandshakeComplete, SessionCache, TlsClientSession, TlsSettings

OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"


def last_error(modem) -> int:
    return int(re.search(rb"\+QIGETERROR: (\d+),", modem.at("AT+QIGETERROR")).group(1))


def profile_copy(tmp_path: Path, name: str, replace: tuple[str, str]) -> str:
    """A copy of a built-in profile with one line replaced (what a user's --profile does)."""
    text = (PROFILE_DIR / f"{name}.toml").read_text()
    assert replace[0] in text
    path = tmp_path / f"{name}-custom.toml"
    path.write_text(text.replace(replace[0], replace[1]))
    return str(path)


# -- item 2a: ALPN bytes outside ASCII --------------------------------------------------------------
def test_alpn_with_a_non_ascii_byte_goes_to_the_wire_as_sent(ec2x, net, pki):
    """Decision: ALPN protocol ids are opaque bytes (RFC 7301): the host's bytes are offered
    unchanged (the parser hands them over as latin-1 chars). Before: the open never answered."""
    with TlsServer(pki.server, alpn=["http/1.1"]) as server:
        net(server)
        cfg(ec2x, "alpn", 1, '"h2,\xe9"')
        assert ec2x.at('AT+QSSLCFG="alpn",1') == b'\r\n+QSSLCFG: "alpn",1,"h2,\xe9"\r\n\r\nOK\r\n'
        assert open_ssl(ec2x, 1) == 0
        conn = server.wait_handshake()
        close(ec2x)
    assert conn.alpn_offered == [b"h2", b"\xe9"]


def test_alpn_with_a_nul_byte_is_refused_at_qsslcfg(ec2x):
    """A NUL cannot be part of an ALPN name here (Mbed TLS takes C strings: it would be cut)."""
    assert ec2x.at(b'AT+QSSLCFG="alpn",1,"h2,a\x00b"') == ERROR
    assert last_error(ec2x) == 552
    assert ec2x.at('AT+QSSLCFG="alpn",1') == b'\r\n+QSSLCFG: "alpn",1,""\r\n\r\nOK\r\n'


# -- item 3: a replaced CA is not bypassed by session resumption ------------------------------------
@pytest.mark.needs_native
def test_replaced_ca_file_is_not_bypassed_by_resumption(ec2x, net, pki):
    with TlsServer(pki.server) as server:
        net(server)
        assert ec2x.upload("UFS:ca.pem", pki.ca.cert_pem).endswith(OK)
        cfg(ec2x, "seclevel", 0, 1)
        cfg(ec2x, "cacert", 0, '"UFS:ca.pem"')
        for _ in range(2):                              # the server does resume: proof below
            assert open_ssl(ec2x, 0) == 0
            server.wait_handshake()
            close(ec2x)
        assert [c.session_reused for c in server.connections] == [False, True]
        assert ec2x.at('AT+QFDEL="UFS:ca.pem"') == OK
        assert ec2x.upload("UFS:ca.pem", pki.wrong_ca.cert_pem).endswith(OK)
        assert open_ssl(ec2x, 0) == 566                 # full handshake, the new CA rejects it
        assert len(server.connections) == 3 and not server.connections[2].session_reused
        assert ec2x.at('AT+QFDEL="UFS:ca.pem"') == OK
        assert ec2x.upload("UFS:ca.pem", pki.ca.cert_pem).endswith(OK)
        assert open_ssl(ec2x, 0) == 0
        assert server.wait_handshake().session_reused is False
        close(ec2x)


def _resume_run(server, settings, cache) -> HandshakeComplete:
    driver = ClientDriver(TlsClientSession(settings, cache, ("ctx", "localhost", 443)), server.port)
    result = driver.handshake()
    assert isinstance(result, HandshakeComplete), result
    driver.session.close()
    driver.flush()
    server.conn.done.wait(5)
    driver.close()
    return result


@pytest.fixture(scope="module")
def engine_pki():
    pki = default_pki()
    return (pki.ca, pki.wrong_ca, pki.issue("hardening-localhost", "localhost"),
            pki.issue("hardening-client", "modem-client@example.test"))


@pytest.mark.needs_native
@pytest.mark.parametrize("change", ["ca_pem", "client_cert", "ignore_local_time", "verify_hostname"])
def test_engine_never_resumes_under_other_verification_material(engine_pki, change):
    """The engine keeps, with each cached session, a digest of the settings it was verified
    under (CA, client certificate and key, relax flags, ...): a session is offered again only
    under the very same ones, whoever builds the cache key (EC2x contexts, ML302 slots)."""
    ca, other_ca, rsa_leaf, client_leaf = engine_pki
    both_cas = ca.cert_pem + other_ca.cert_pem
    base = dict(server_name="localhost", seclevel=2, ca_pem=ca.cert_pem,
                client_cert_pem=client_leaf.cert_pem, client_key_pem=client_leaf.key_pem)
    other = {"ca_pem": dict(ca_pem=both_cas),
             "client_cert": dict(client_cert_pem=rsa_leaf.cert_pem,
                                 client_key_pem=rsa_leaf.key_pem),
             "ignore_local_time": dict(ignore_local_time=False),
             "verify_hostname": dict(verify_hostname=False)}[change]
    cache = SessionCache()
    with TlsServer(rsa_leaf, legacy=True) as server:
        assert not _resume_run(server, TlsSettings(**base), cache).resumed
        assert _resume_run(server, TlsSettings(**base), cache).resumed          # same: resumes
        assert not _resume_run(server, TlsSettings(**{**base, **other}), cache).resumed
        assert not server.conn.session_reused
        assert not _resume_run(server, TlsSettings(**base), cache).resumed      # the old one is gone


# -- item 11: PSK identity and key bytes pass through unchanged ---------------------------------------
def test_psk_identity_bytes_reach_the_server_unchanged(ec2x, net):
    """s_server expecting another identity prints the one it got: 69 64 E9, not id\\xc3\\xa9."""
    with OpenSslServer(["-nocert", "-psk", "00112233445566778899aabbccddeeff", "-psk_identity", "zzz",
                        "-cipher", "PSK:@SECLEVEL=0", "-tls1_2"]) as server:
        net(server)
        cfg(ec2x, "psk", 0, '"id\xe9"', '"00112233445566778899aabbccddeeff"')
        assert open_ssl(ec2x, 0) == 0
        got = server.wait_for_output(rb"got '([^']*)' expected 'zzz'")
        close(ec2x)
    assert got.group(1) == b"id\xe9"


def test_psk_text_key_bytes_reach_the_server_unchanged(ec2x, net):
    """A key that is not hex is its bytes as the host sent them: 63 6C E9 ("cl\\xe9")."""
    with OpenSslServer(["-nocert", "-psk", b"cl\xe9".hex(), "-psk_identity", "modem-1",
                        "-cipher", "PSK:@SECLEVEL=0", "-tls1_2"]) as server:
        net(server)
        cfg(ec2x, "psk", 0, '"modem-1"', '"cl\xe9"')
        assert open_ssl(ec2x, 0) == 0
        server.wait_for_output(rb"CIPHER is \S*PSK")
        assert ec2x.send_data(0, b"psk up\n") == b"\r\nSEND OK\r\n"
        server.wait_for_output(rb"psk up")
        close(ec2x)


# -- ML302: AT+QSSLRECV up to 1500, AT+QSSLSTATE's <state> line ------------------------------------
@pytest.fixture
def ml302_up(emulator, ml302):
    assert ml302.at('AT+CGDCONT=1,"IP","CMNET"') == OK
    assert ml302.at("AT+CGACT=1,1").endswith(OK)

    def route(server) -> None:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
    return route


def test_ml302_qsslrecv_accepts_1500(ml302, ml302_up):
    """Its test form says (1,1500) and hosts copy it: 1500 is read, 1501 is ERROR."""
    with TlsServer(default_pki().server) as server:
        ml302_up(server)
        assert ml302.at(f'AT+QSSLOPEN=0,0,"{HOST}",{PORT},0') == OK
        assert opened(ml302, 0) == 0
        payload = bytes(range(0x20, 0x7F)) * 15 + b"x" * 75   # 1500 bytes, no Ctrl+Z / ESC
        for part in (payload[:1460], payload[1460:]):
            ml302.write("AT+QSSLSEND=0\r")
            ml302.read_until(b"\r\n> ")
            ml302.write(part + b"\x1a")
            ml302.read_until(b"\r\nSEND OK\r\n")
        server.wait_for(lambda: len(server.conn.received) >= 1500, 5, "the payload")
        data = b""
        for _ in range(50):
            answer = ml302.at("AT+QSSLRECV=1,0,1500")
            assert answer.endswith(OK) and answer != ERROR
            m = re.search(rb"\+QSSLRECV: [\d.]+:\d+,TCP,(\d+)\r\n", answer)
            if m:
                data += answer[m.end():m.end() + int(m.group(1))]
            if len(data) >= 1500:
                break
            ml302.quiet_for(0.05)
        assert data == payload
        assert ml302.at("AT+QSSLRECV=1,0,1501") == ERROR
        assert ml302.at("AT+QSSLCLOSE=0").startswith(OK)


def qsslstate_state(modem) -> str:
    answer = modem.at("AT+QSSLSTATE")
    lines = answer.split(b"\r\n")
    assert lines[0] == b"" and lines[1].startswith(b"+QSSLSTATE: \""), answer
    assert lines[2].startswith(b'+QSSLSTATE: 0,"TCP",'), answer     # the socket lines follow
    return lines[1][len(b'+QSSLSTATE: "'):-1].decode()


def test_ml302_qsslstate_starts_with_the_state_line(ml302, emulator):
    assert qsslstate_state(ml302) == "IP INITIAL"             # no PDP context active
    assert ml302.at('AT+CGDCONT=1,"IP","CMNET"') == OK
    assert ml302.at("AT+CGACT=1,1").endswith(OK)
    assert qsslstate_state(ml302) == "IP STATUS"              # local IP obtained, no connection
    with TlsServer(default_pki().server) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        assert ml302.at(f'AT+QSSLOPEN=0,0,"{HOST}",{PORT},0') == OK
        assert opened(ml302, 0) == 0
        assert qsslstate_state(ml302) == "IP PROCESSING"      # data phase
        assert ml302.at("AT+QSSLCLOSE=0").startswith(OK)
        ml302.seen(b"0,CLOSE OK\r\n")
    assert qsslstate_state(ml302) == "IP STATUS"
    assert ml302.at("AT+CGACT=0,1").endswith(OK)
    assert qsslstate_state(ml302) == "IP INITIAL"


# -- EC2x "clientcertex": the note's spelling of "cacertex" --------------------------------------------
def test_clientcertex_is_the_notes_alias_of_cacertex(ec2x):
    assert ec2x.at('AT+QSSLCFG="clientcertex",2,"UFS:extra.pem"') == OK
    assert ec2x.at('AT+QSSLCFG="cacertex",2') == b'\r\n+QSSLCFG: "cacertex",2,"UFS:extra.pem"\r\n\r\nOK\r\n'
    assert ec2x.at('AT+QSSLCFG="clientcertex",2') == b'\r\n+QSSLCFG: "cacertex",2,"UFS:extra.pem"\r\n\r\nOK\r\n'
    listing = ec2x.at('AT+QSSLCFG="clientcertex"')
    assert listing.count(b'+QSSLCFG: "cacertex",') == 6 and b'"cacertex",2,"UFS:extra.pem"' in listing
    assert ec2x.at('AT+QSSLCFG="clientcert",2') == b'\r\n+QSSLCFG: "clientcert",2,""\r\n\r\nOK\r\n'


# -- AT+CFUN=1,1 forgets AT+QSSLCFG ------------------------------------------------------------------
def reboot(modem, last_urc: bytes) -> None:
    assert modem.at("AT+CFUN=1,1") == OK
    modem.read_until(last_urc)                               # the boot URCs, up to the profile's last
    assert modem.at("ATE0").endswith(OK)                     # echo is back on after a reboot


def test_ec2x_reboot_resets_every_ssl_context(ec2x):
    """The note: "The configurations will not be saved"."""
    for line in ('"seclevel",1,2', '"cacert",1,"UFS:ca.pem"', '"alpn",3,"h2"', '"psk",5,"id","00aa"',
                 '"ciphersuite",0,0X0035', '"sni",2,1'):
        assert ec2x.at(f"AT+QSSLCFG={line}") == OK
    reboot(ec2x, b"+QIND: PB DONE\r\n")
    for line, value in (('"seclevel",1', "0"), ('"cacert",1', '""'), ('"alpn",3', '""'),
                        ('"psk",5', '"",""'), ('"ciphersuite",0', "0XFFFF"), ('"sni",2', "0")):
        name, ctx = line.rsplit(",", 1)
        assert ec2x.at(f"AT+QSSLCFG={line}") == f"\r\n+QSSLCFG: {name},{ctx},{value}\r\n\r\nOK\r\n".encode()


def test_ml302_reboot_resets_ssl_settings(ml302):
    for line in ('"seclevel",0,2', '"cacert",0,"/other.pem"', '"ignorertctime",0', '"https",1'):
        assert ml302.at(f"AT+QSSLCFG={line}") == OK
    reboot(ml302, b"+CPIN: READY\r\n")
    assert ml302.at('AT+QSSLCFG="ctxindex",0') == \
        b'\r\n+QSSLCFG: 0,4,0,0XFFFF,"/caCrt.pem","/clientCrt.pem","/privateKey.pem"\r\n\r\nOK\r\n'
    assert ml302.at('AT+QSSLCFG="ignorertctime"') == b'\r\n+QSSLCFG: "ignorertctime",1\r\n\r\nOK\r\n'
    assert ml302.at('AT+QSSLCFG="https"') == b'\r\n+QSSLCFG: "https",0\r\n\r\nOK\r\n'


# -- profile key ssl.verify_hostname ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def dns_only():
    """A server certificate with DNS names only (no IP SAN)."""
    return default_pki().issue("hardening-dns-only", "www.iottest.work")


@pytest.mark.parametrize("verify, code", [(None, 566), (True, 566), (False, 0)])   # None: no key
def test_verify_hostname_profile_key_for_an_ip_literal(open_modem, emulator, pki, dns_only, tmp_path,
                                                       verify, code):
    line = "" if verify is None else f"verify_hostname = {str(verify).lower()}"
    profile = profile_copy(tmp_path, "ec2x", ("verify_hostname = true", line))
    modem, _ = open_modem(profile)
    assert modem.upload("UFS:ca.pem", pki.ca.cert_pem).endswith(OK)
    assert modem.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
    cfg(modem, "seclevel", 0, 1)
    cfg(modem, "cacert", 0, '"UFS:ca.pem"')
    with TlsServer(dns_only) as server:
        emulator.router.add_map("220.180.239.212", 8010, "127.0.0.1", server.port)
        assert open_ssl(modem, 0, host="220.180.239.212", port=8010) == code
        if code == 0:
            close(modem)
        emulator.router.add_map("www.iottest.work", 8010, "127.0.0.1", server.port)
        assert open_ssl(modem, 0, client_id=1, host="www.iottest.work", port=8010) == 0   # DNS name
        close(modem, 1)


def test_verify_hostname_is_a_checked_profile_key(tmp_path):
    for name in ("ec2x", "ml302"):
        assert load_profile(name)["ssl.verify_hostname"] is True
    bad = profile_copy(tmp_path, "ec2x", ("verify_hostname = true", 'verify_hostname = "yes"'))
    with pytest.raises(ProfileError, match="ssl.verify_hostname: must be true or false"):
        load_profile(bad)


# -- --demo on the ML302: the demo CA sits in the CA slot ---------------------------------------------
def demo_open(host) -> int:
    assert host.at("ATE0").endswith(OK)
    assert host.at('AT+CGDCONT=1,"IP","CMNET"') == OK
    assert host.at("AT+CGACT=1,1").endswith(OK)
    assert host.at('AT+QSSLCFG="seclevel",0,1') == OK
    assert host.at('AT+QSSLOPEN=0,0,"www.iottest.work",443,0') == OK
    return opened(host, 0)


def test_ml302_demo_ca_is_in_the_ca_slot(tmp_path):
    state = tmp_path / "ml302"
    for _ in range(2):          # a new demo CA each start replaces the previous run's one
        with BackgroundEmulator(demo=True) as emu:
            host = Host(emu.add_modem("ml302", state_dir=state).path)
            try:
                assert demo_open(host) == 0
                assert host.at("AT+QSSLCLOSE=0").startswith(OK)
            finally:
                host.close()


def test_ml302_demo_leaves_a_ca_of_the_users_own(tmp_path):
    state = tmp_path / "ml302"
    mine = default_pki().ca.cert_pem
    with BackgroundEmulator() as emu:
        host = Host(emu.add_modem("ml302", state_dir=state).path)
        host.at("ATE0")
        host.write("AT+QSECWRITE=0\r")
        host.read_until(b"\r\n> ")
        host.write(mine + b"\x1a")
        host.read_until(OK)
        host.close()
    with BackgroundEmulator(demo=True) as emu:
        modem = emu.add_modem("ml302", state_dir=state)
        host = Host(modem.path)
        try:
            assert demo_open(host) == -1                        # the user's CA is not the demo's
        finally:
            host.close()
        assert emu.run(modem.modem.secstore.load, 0) == mine
