"""tls_engine.native: every feature proven from the SERVER side.

Peers (emulator.testing.peers): Python ssl (OpenSSL 3) servers (TlsServer, which also
records the raw ClientHello), `openssl s_server`, and (for RC4/3DES, which this OpenSSL
lacks) a python-mbedtls server. The client side is always a TLSWrappedBuffer pumped sans-IO
over a real socket (mbedtls_peer.SansIO). The self-check and the in-process checks are in
test_native_selfcheck.py.
"""
from __future__ import annotations

import mbedtls.exceptions as mexc
import mbedtls.tls as mtls
import mbedtls.x509 as mx509
import pytest

from emulator.testing.peers import OpenSslServer, TlsServer
from emulator.testing.peers.mbedtls_peer import MbedtlsServer, SansIO, connect, mbedtls_server_context
from tls_engine import native

TLS12 = mtls.TLSVersion.TLSv1_2


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trust(ca):
    return mtls.TrustStore([mx509.CRT.from_PEM(ca.cert_pem.decode())])


def client_context(trust, **kw) -> mtls.ClientContext:
    kw.setdefault("highest_supported_version", TLS12)
    return mtls.ClientContext(mtls.TLSConfiguration(trust_store=trust, **kw))


@pytest.fixture()
def py_server(rsa_leaf, request, tmp_path):
    """Python ssl echo server, TLS 1.2 max (Mbed TLS 2.28 has no TLS 1.3); its key log in
    py_server.keylog. "session-id": no tickets, resumption through its session cache."""
    tickets = getattr(request, "param", "tickets") == "tickets"
    with TlsServer(rsa_leaf, max_version="TLSv1.2", tickets=tickets,
                   keylog=tmp_path / "server-keylog.txt") as server:
        yield server


def echo_once(conn: SansIO, payload: bytes = b"ping") -> None:
    conn.send(payload)
    assert conn.recv_exactly(len(payload)) == payload


# --- resumption ------------------------------------------------------------------------------


@pytest.mark.parametrize("py_server", ["tickets", "session-id"], indirect=True)
def test_resumption_accepted_by_openssl(py_server, trust):
    ctx = client_context(trust)
    first = connect(py_server.port, ctx.wrap_buffers("localhost"))
    first_ssl = native.NativeSsl(first.buffer)
    first.handshake()
    echo_once(first)
    saved = first_ssl.save_session()
    first.close()
    seen = py_server.wait_done(0)
    assert seen.error is None and seen.session_reused is False
    assert first_ssl.session_reused() is False

    # Same saved session, loaded twice: a session is reusable.
    for i in (1, 2):
        again = connect(py_server.port, ctx.wrap_buffers("localhost"))
        again_ssl = native.NativeSsl(again.buffer)
        again_ssl.load_session(saved)
        again.handshake()
        echo_once(again, b"resumed")
        assert again_ssl.session_reused() is True
        again.close()
        seen = py_server.wait_done(i)
        assert seen.error is None, seen.error
        assert seen.session_reused is True  # OpenSSL's own word
        assert seen.received == b"resumed"


def test_no_resumption_without_load_session(py_server, trust):
    ctx = client_context(trust)
    for i in range(2):
        conn = connect(py_server.port, ctx.wrap_buffers("localhost"))
        nssl = native.NativeSsl(conn.buffer)
        conn.handshake()
        echo_once(conn)
        assert nssl.session_reused() is False
        conn.close()
        seen = py_server.wait_done(i)
        assert seen.error is None and seen.session_reused is False


def test_load_session_after_handshake_is_refused(py_server, trust):
    conn = connect(py_server.port, client_context(trust).wrap_buffers("localhost"))
    nssl = native.NativeSsl(conn.buffer)
    conn.handshake()
    saved = nssl.save_session()
    with pytest.raises(native.NativeError):
        nssl.load_session(saved)
    conn.close()


# --- key log ---------------------------------------------------------------------------------


def test_keylog_line_equals_openssl_server_keylog(py_server, trust):
    ctx = client_context(trust)
    lines: list[str] = []
    native.NativeConf(ctx).set_keylog(lines.append)
    conn = connect(py_server.port, ctx.wrap_buffers("localhost"))
    conn.handshake()
    echo_once(conn)
    conn.close()
    assert py_server.wait_done(0).error is None
    server_lines = [
        line for line in py_server.keylog.read_text().splitlines() if line.startswith("CLIENT_RANDOM ")
    ]
    assert len(lines) == 1
    assert lines == server_lines


# --- cipher suites ---------------------------------------------------------------------------

OFFER = [0x0005, 0xC02F, 0x000A, 0x0035, 0xC011, 0x0004, 0xC012, 0x002F, 0xC002, 0xC003]


def offered_suites(ctx) -> list[int]:
    """The cipher_suites vector of the ClientHello `ctx` sends, exactly as it crossed the
    wire (to a server that only reads it)."""
    with TlsServer(mode="silent") as server:
        conn = connect(server.port, ctx.wrap_buffers("localhost"))
        conn.start_handshake()
        hello = server.wait_for(lambda: server.connections and server.conn.client_hello)
        conn.sock.close()
    return hello.cipher_suites


def test_set_ciphersuites_offers_exactly_that_list_in_order(trust):
    ctx = client_context(trust)
    native.NativeConf(ctx).set_ciphersuites(OFFER)
    suites = offered_suites(ctx)
    # Mbed TLS appends TLS_EMPTY_RENEGOTIATION_INFO_SCSV to an initial ClientHello.
    assert suites == OFFER + [native.EMPTY_RENEGOTIATION_INFO_SCSV]


RC4_3DES_IDS = {0x0004, 0x0005, 0x000A, 0xC002, 0xC003, 0xC007, 0xC008, 0xC011, 0xC012, 0xC00C, 0xC00D}


def test_default_offer_has_no_rc4_or_3des(trust):
    suites = offered_suites(client_context(trust))
    assert suites and not set(suites) & RC4_3DES_IDS


# --- RC4 / 3DES against an Mbed TLS server ----------------------------------------------------


LEGACY = [
    (0x0005, "TLS-RSA-WITH-RC4-128-SHA"),
    (0x000A, "TLS-RSA-WITH-3DES-EDE-CBC-SHA"),
    (0x0004, "TLS-RSA-WITH-RC4-128-MD5"),
    (0xC011, "TLS-ECDHE-RSA-WITH-RC4-128-SHA"),
    (0xC012, "TLS-ECDHE-RSA-WITH-3DES-EDE-CBC-SHA"),
]


@pytest.mark.parametrize("suite, name", LEGACY, ids=[n for _, n in LEGACY])
def test_rc4_3des_negotiated_with_mbedtls_server(rsa_leaf, trust, suite, name):
    server = MbedtlsServer(mbedtls_server_context(rsa_leaf, [s for s, _ in LEGACY]))
    ctx = client_context(trust)
    native.NativeConf(ctx).set_ciphersuites([suite])
    conn = connect(server.port, ctx.wrap_buffers("localhost"))
    conn.handshake()
    client_cipher = conn.buffer.cipher()
    echo_once(conn, b"rc4?")
    conn.close()
    server.join()
    assert server.error is None, server.error
    assert server.cipher == name == client_cipher
    assert server.received == b"rc4?"


def test_rc4_3des_refused_without_native(rsa_leaf, trust):
    # Server offers only RC4/3DES; a client left at python-mbedtls defaults shares none.
    server = MbedtlsServer(mbedtls_server_context(rsa_leaf, [0x0005, 0x000A]))
    conn = connect(server.port, client_context(trust).wrap_buffers("localhost"))
    with pytest.raises(mexc.TLSError):
        conn.handshake()
    conn.sock.close()
    server.join()
    # Server side: MBEDTLS_ERR_SSL_NO_CIPHER_CHOSEN, it sent handshake_failure.
    assert server.cipher is None and "0x7380" in server.error
    # And the public API cannot even name them.
    with pytest.raises(NotImplementedError):
        mtls.ClientContext(mtls.TLSConfiguration(ciphers=("TLS-RSA-WITH-RC4-128-SHA",)))


def test_rc4_offer_refused_by_default_server(rsa_leaf, trust):
    server = MbedtlsServer(mbedtls_server_context(rsa_leaf))  # python-mbedtls defaults
    ctx = client_context(trust)
    native.NativeConf(ctx).set_ciphersuites([0x0005])
    conn = connect(server.port, ctx.wrap_buffers("localhost"))
    with pytest.raises(mexc.TLSError):
        conn.handshake()
    conn.sock.close()
    server.join()
    assert server.cipher is None and "0x7380" in server.error  # no cipher in common


# --- renegotiation ----------------------------------------------------------------------------


@pytest.fixture()
def s_server(rsa_leaf):
    """`openssl s_server -tls1_2 -msg`: stdin lines are commands ("r" = renegotiate) or
    data for the client; -msg prints every handshake message and alert on stdout."""
    args = ["-tls1_2", "-msg", "-cert", str(rsa_leaf.cert_path), "-key", str(rsa_leaf.key_path)]
    with OpenSslServer(args) as server:
        yield server


def renegotiation_client(s_server, trust, enabled: bool):
    ctx = client_context(trust)
    conf = native.NativeConf(ctx)
    conf.set_renegotiation(enabled)
    keylog: list[str] = []
    conf.set_keylog(keylog.append)
    conn = connect(s_server.port, ctx.wrap_buffers("localhost"))
    conn.handshake()
    conn.send(b"before\n")
    s_server.wait_for_output(rb"before\n")
    s_server.write(b"r\n")  # s_server: SSL_renegotiate() + SSL_do_handshake() -> HelloRequest
    s_server.wait_for_output(rb"HelloRequest")
    return conn, keylog


def test_renegotiation_enabled_completes(s_server, trust):
    conn, keylog = renegotiation_client(s_server, trust, enabled=True)
    s_server.write(b"pong\n")  # queued behind the renegotiation on the server side
    assert conn.recv_exactly(5) == b"pong\n"  # reading drives the client's renegotiation
    conn.send(b"after\n")
    s_server.wait_for_output(rb"after\n")
    out = s_server.stdout.decode("latin-1")
    # The server saw a second full handshake, then application data in the new epoch.
    assert out.count(", ClientHello") == 2
    assert out.count(", Finished") == 4  # 2 per handshake
    assert out.index("after\n") > out.rindex(", Finished")
    assert len(keylog) == 2 and keylog[0] != keylog[1]  # new keys were derived
    conn.close()


def test_renegotiation_disabled_is_refused(s_server, trust):
    conn, keylog = renegotiation_client(s_server, trust, enabled=False)
    # The client answers the HelloRequest with a warning alert no_renegotiation(100);
    # OpenSSL 3 treats that as fatal: it sends handshake_failure and drops the link.
    with pytest.raises((mexc.TLSError, ConnectionError)):
        conn.recv_exactly(1)
    s_server.wait_for_output(rb"no renegotiation", stream="stderr")
    s_server.wait_for_output(rb"fatal handshake_failure")
    out = s_server.stdout.decode("latin-1")
    assert "Alert [length 0002], warning no_renegotiation" in out
    assert "fatal handshake_failure" in out
    assert out.count(", ClientHello") == 1
    assert len(keylog) == 1
    conn.sock.close()


# --- verify result ----------------------------------------------------------------------------


def test_verify_result(py_server, trust, pki):
    conn = connect(py_server.port, client_context(trust).wrap_buffers("localhost"))
    nssl = native.NativeSsl(conn.buffer)
    conn.handshake()
    assert nssl.verify_result() == 0
    echo_once(conn)
    conn.close()

    other = mtls.TrustStore([mx509.CRT.from_PEM(pki.wrong_ca.cert_pem.decode())])
    ctx = client_context(other, validate_certificates=False)  # VERIFY_OPTIONAL
    conn = connect(py_server.port, ctx.wrap_buffers("localhost"))
    nssl = native.NativeSsl(conn.buffer)
    conn.handshake()
    assert nssl.verify_result() == 0x08  # MBEDTLS_X509_BADCERT_NOT_TRUSTED
    conn.close()


# -- the DTLS timer on the modem clock (_DelayTimer) ----------------------------------------------
from hypothesis import given, settings as hsettings, strategies as st  # noqa: E402

from tls_engine.native.handles import _DelayTimer  # noqa: E402


@hsettings(max_examples=400, deadline=None)
@given(start=st.floats(0, 2e9, allow_nan=False), fin_ms=st.sampled_from([1000, 2000, 4000, 8000, 16000, 32000, 60000]),
       offset=st.integers(0, 999_999))
def test_delay_timer_expiry_is_one_instant_for_mbedtls_and_the_session(start, fin_ms, offset):
    """Armed at any modem time (off the whole second too: 1015.1, epoch seconds), read back at
    start + interval computed in floats: Mbed TLS's get callback and running() agree on
    "expired", and a timer not expired never has a remainder so small that re-arming it for
    that long lands on the same instant (was a bug: 1031.1 - 1015.1 is 15999.9999999 ms, ~1e-13
    s left, a timer re-armed for ever at one instant)."""
    clock = [start + offset / 1e6]
    timer = _DelayTimer(lambda: clock[0])
    timer._set(None, fin_ms // 4, fin_ms)
    for now in (timer.start + fin_ms / 1000, timer.start + fin_ms / 1000 - 1e-7, timer.start + fin_ms / 2000):
        clock[0] = now
        left = timer.running()[1]
        expired = timer._get(None) == 2
        assert expired == (left == 0.0), (now, left)
        assert left == 0.0 or now + left > now, (now, left)
    clock[0] = timer.start + fin_ms / 1000
    assert timer._get(None) == 2 and timer.running()[1] == 0.0      # due at the interval's end
    timer._set(None, 0, 0)
    assert timer.running() is None and timer._get(None) == -1       # cancelled


# -- VERIFY_NONE (seclevel 0) ----------------------------------------------------------------------
def _deep_chain_identity():
    """A leaf for localhost under 9 intermediates, all of them and the root sent: 11 linked
    certificates, none trusted by a client without a trust store."""
    from emulator.testing.peers import ServerIdentity, make_cert
    root = make_cert("Native Deep Root", None, ca=True)
    ints, parent = [], root
    for i in range(9):
        parent = make_cert(f"Native Deep Int {i + 1}", parent, ca=True)
        ints.append(parent)
    leaf = make_cert("localhost", ints[-1], ca=False, names=("localhost",))
    return ServerIdentity(leaf, *ints[::-1], root)


def test_verify_none_never_walks_a_chain_verify_optional_calls_too_long():
    """python-mbedtls's validate_certificates=False is VERIFY_OPTIONAL: its chain walk fails a
    chain of 11 untrusted certificates with MBEDTLS_ERR_X509_FATAL_ERROR (-0x3000), which
    OPTIONAL does not forgive; set_verify_none(True) (mbedtls_ssl_conf_authmode NONE) never
    walks it: the handshake completes and data flow, the server sees its handshake done."""
    identity = _deep_chain_identity()
    with TlsServer(identity, max_version="TLSv1.2") as server:
        optional = mtls.ClientContext(mtls.TLSConfiguration(validate_certificates=False,
                                                            highest_supported_version=TLS12))
        conn = connect(server.port, optional.wrap_buffers("localhost"))
        with pytest.raises(mexc.TLSError) as failed:
            conn.handshake()
        assert abs(failed.value.err) == 0x3000
        conn.sock.close()
        none = mtls.ClientContext(mtls.TLSConfiguration(validate_certificates=False,
                                                        highest_supported_version=TLS12))
        native.NativeConf(none).set_verify_none(True)
        conn = connect(server.port, none.wrap_buffers("localhost"))
        conn.handshake()
        echo_once(conn)
        conn.close()


def test_set_verify_none_writes_the_authmode_and_back():
    from tls_engine.native import layout
    ctx = mtls.ClientContext(mtls.TLSConfiguration(validate_certificates=False))
    conf = native.NativeConf(ctx)
    assert layout.u8(conf.address + layout.CF_AUTHMODE) == layout.VERIFY_OPTIONAL
    conf.set_verify_none(True)
    assert layout.u8(conf.address + layout.CF_AUTHMODE) == layout.VERIFY_NONE
    conf.set_verify_none(False)
    assert layout.u8(conf.address + layout.CF_AUTHMODE) == layout.VERIFY_OPTIONAL


@pytest.mark.parametrize("seclevel,authmode", [(0, 0), (1, 1), (2, 1)])
def test_the_engine_runs_verify_none_at_seclevel_0_only(base_settings, ca, seclevel, authmode):
    """tls_engine.config: seclevel 0 (no authentication) gets VERIFY_NONE, 1 and 2 keep
    VERIFY_OPTIONAL (the engine's own check decides, Mbed TLS's walk stops at the CA file)."""
    from tls_engine import config
    from tls_engine.native import layout
    settings = base_settings(seclevel=seclevel, ca_pem=ca.cert_pem)
    context, _ = config.client_context(config.build_plan(settings), settings)
    assert layout.u8(native.NativeConf(context).address + layout.CF_AUTHMODE) == authmode


def test_a_failing_native_conf_degrades_seclevel_0_instead_of_failing_the_open(base_settings, monkeypatch):
    """The native layer passed its self-check but NativeConf fails on this context: a
    seclevel 0 context that wants nothing else from it (a suite list python-mbedtls sets) is built under
    python-mbedtls's VERIFY_OPTIONAL with a note, not refused as 555; a context that needs
    the exact suite list still is."""
    from tls_engine import config
    from tls_engine.errors import EngineConfigError

    class Broken:
        def __init__(self, context):
            raise RuntimeError("layout moved")
    monkeypatch.setattr(native, "NativeConf", Broken)
    monkeypatch.setattr(config, "_CONTEXTS", {})
    settings = base_settings(seclevel=0, ca_pem=None, cipher_suites=(0xC02F,))   # (no native list)
    assert config.build_plan(settings).native_suites is None
    context, notes = config.client_context(config.build_plan(settings), settings)
    assert context is not None and any("VERIFY_NONE" in n and "layout moved" in n for n in notes)
    rc4 = base_settings(seclevel=0, ca_pem=None, cipher_suites=(0x0005,))
    with pytest.raises(EngineConfigError) as refused:
        config.client_context(config.build_plan(rc4), rc4)
    assert refused.value.kind == "unsupported_cipher"
