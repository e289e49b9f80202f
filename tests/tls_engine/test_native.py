"""tls_engine.native: every feature proven from the SERVER side.

Peers: Python ssl (OpenSSL 3) servers, `openssl s_server`, a raw TCP listener that reads
the ClientHello, and (for RC4/3DES, which this OpenSSL lacks) a python-mbedtls server.
The client side is always a TLSWrappedBuffer pumped sans-IO over a real socket.
"""
from __future__ import annotations

import shutil
import socket
import ssl
import threading

import mbedtls.exceptions as mexc
import mbedtls.pk as mpk
import mbedtls.tls as mtls
import mbedtls.x509 as mx509
import pytest
import trustme

from tests.tls_engine.native_peers import (
    DEADLINE,
    OpenSslServer,
    PySslServer,
    SansIO,
    capture_client_hello,
    connect,
)
from tls_engine import native, native_layout

TLS12 = mtls.TLSVersion.TLSv1_2


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki():
    ca = trustme.CA(key_type=trustme.KeyType.RSA)
    return ca, ca.issue_cert("localhost", key_type=trustme.KeyType.RSA)


@pytest.fixture(scope="module")
def trust(pki):
    ca, _ = pki
    return mtls.TrustStore([mx509.CRT.from_PEM(ca.cert_pem.bytes().decode())])


def client_context(trust, **kw) -> mtls.ClientContext:
    kw.setdefault("highest_supported_version", TLS12)
    return mtls.ClientContext(mtls.TLSConfiguration(trust_store=trust, **kw))


@pytest.fixture()
def py_server(pki, request, tmp_path):
    """Python ssl server, TLS 1.2 max (Mbed TLS 2.28 has no TLS 1.3)."""
    _, cert = pki
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    cert.configure_cert(ctx)
    if getattr(request, "param", "tickets") == "session-id":
        ctx.options |= ssl.OP_NO_TICKET  # resumption through the server's session cache
    ctx.keylog_filename = str(tmp_path / "server-keylog.txt")
    server = PySslServer(ctx)
    server.keylog_path = tmp_path / "server-keylog.txt"
    yield server
    server.close()


def echo_once(conn: SansIO, payload: bytes = b"ping") -> None:
    conn.send(payload)
    assert conn.recv_exactly(len(payload)) == payload


# --- self-check ------------------------------------------------------------------------------


def test_self_check_passes_on_this_wheel():
    assert native.available(), native.unavailable_reason()
    assert native.unavailable_reason() == ""


@pytest.mark.parametrize(
    "attr, value, reason",
    [
        ("EXPECTED_PY_MBEDTLS", "2.10.0", "python-mbedtls is 2.10.1, this module knows only 2.10.0"),
        ("EXPECTED_MBEDTLS", (2, 28, 9), "bundled Mbed TLS is (2, 28, 8)"),
        ("SSL_OFFSET", 32, "pointers from MbedTLSBuffer into MbedTLSConfiguration"),
        ("CF_ARC4_DISABLED", 9, "mbedtls_ssl_conf_arc4_support does not toggle conf byte 9"),
        ("SS_MASTER", 72, "session->master differs from the exported master secret"),
    ],
)
def test_self_check_reports_mismatch_instead_of_crashing(monkeypatch, attr, value, reason):
    monkeypatch.setattr(native_layout, attr, value)
    try:
        native._init()
        assert not native.available()
        assert reason in native.unavailable_reason()
        with pytest.raises(native.NativeUnavailable):
            native.NativeConf(mtls.ClientContext(mtls.TLSConfiguration()))
    finally:
        monkeypatch.undo()
        native._init()
    assert native.available(), native.unavailable_reason()


def test_basicsize_mismatch_is_reported(monkeypatch):
    monkeypatch.setitem(native_layout.BASICSIZE, "MbedTLSBuffer", 560)
    try:
        native._init()
        assert "MbedTLSBuffer.__basicsize__ is 568, expected 560" in native.unavailable_reason()
    finally:
        monkeypatch.undo()
        native._init()
    assert native.available()


def test_wrong_objects_are_rejected():
    with pytest.raises(TypeError):
        native.NativeConf(object())
    with pytest.raises(TypeError):
        native.NativeSsl(mtls.ClientContext(mtls.TLSConfiguration()))


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
    seen = py_server.next_result()
    assert seen.error is None and seen.session_reused is False
    assert first_ssl.session_reused() is False

    # Same saved session, loaded twice: a session is reusable.
    for _ in range(2):
        again = connect(py_server.port, ctx.wrap_buffers("localhost"))
        again_ssl = native.NativeSsl(again.buffer)
        again_ssl.load_session(saved)
        again.handshake()
        echo_once(again, b"resumed")
        assert again_ssl.session_reused() is True
        again.close()
        seen = py_server.next_result()
        assert seen.error is None, seen.error
        assert seen.session_reused is True  # OpenSSL's own word
        assert seen.received == b"resumed"


def test_no_resumption_without_load_session(py_server, trust):
    ctx = client_context(trust)
    for _ in range(2):
        conn = connect(py_server.port, ctx.wrap_buffers("localhost"))
        nssl = native.NativeSsl(conn.buffer)
        conn.handshake()
        echo_once(conn)
        assert nssl.session_reused() is False
        conn.close()
        seen = py_server.next_result()
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
    assert py_server.next_result().error is None
    server_lines = [
        line for line in py_server.keylog_path.read_text().splitlines() if line.startswith("CLIENT_RANDOM ")
    ]
    assert len(lines) == 1
    assert lines == server_lines


# --- cipher suites ---------------------------------------------------------------------------

OFFER = [0x0005, 0xC02F, 0x000A, 0x0035, 0xC011, 0x0004, 0xC012, 0x002F, 0xC002, 0xC003]


def offer_and_abort(ctx) -> callable:
    def go(port: int) -> None:
        conn = connect(port, ctx.wrap_buffers("localhost"))
        try:
            conn.handshake()
        except Exception:
            pass  # the listener only reads the ClientHello and hangs up
        finally:
            conn.sock.close()

    return go


def test_set_ciphersuites_offers_exactly_that_list_in_order(trust):
    ctx = client_context(trust)
    native.NativeConf(ctx).set_ciphersuites(OFFER)
    suites = capture_client_hello(offer_and_abort(ctx))
    # Mbed TLS appends TLS_EMPTY_RENEGOTIATION_INFO_SCSV to an initial ClientHello.
    assert suites == OFFER + [native.EMPTY_RENEGOTIATION_INFO_SCSV]


RC4_3DES_IDS = {0x0004, 0x0005, 0x000A, 0xC002, 0xC003, 0xC007, 0xC008, 0xC011, 0xC012, 0xC00C, 0xC00D}


def test_default_offer_has_no_rc4_or_3des(trust):
    suites = capture_client_hello(offer_and_abort(client_context(trust)))
    assert suites and not set(suites) & RC4_3DES_IDS


def test_set_ciphersuites_rejects_unknown_or_empty(trust):
    conf = native.NativeConf(client_context(trust))
    with pytest.raises(ValueError, match="0x1301"):
        conf.set_ciphersuites([0x002F, 0x1301])  # TLS 1.3 suite: not in Mbed TLS 2.28
    with pytest.raises(ValueError):
        conf.set_ciphersuites([])


# --- RC4 / 3DES against an Mbed TLS server ----------------------------------------------------


class MbedtlsServer:
    """python-mbedtls ServerContext on a socket (sans-IO, one connection, echo once)."""

    def __init__(self, ctx: mtls.ServerContext) -> None:
        self.ctx = ctx
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.cipher = self.error = None
        self.received = b""
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(DEADLINE)
        raw, _ = self.listener.accept()
        conn = SansIO(raw, self.ctx.wrap_buffers())
        try:
            conn.handshake()
            self.cipher = conn.buffer.cipher()
            self.received = conn.recv_exactly(4)
            conn.send(self.received)
            conn.wait_eof()  # close only after the client did
        except Exception as exc:  # noqa: BLE001
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()

    def join(self) -> None:
        self.thread.join(DEADLINE)
        self.listener.close()


def mbedtls_server_context(pki, suites=None) -> mtls.ServerContext:
    _, cert = pki
    chain = (
        tuple(mx509.CRT.from_PEM(p.bytes().decode()) for p in cert.cert_chain_pems),
        mpk.RSA.from_PEM(cert.private_key_pem.bytes().decode()),
    )
    ctx = mtls.ServerContext(
        mtls.TLSConfiguration(
            certificate_chain=chain, validate_certificates=False, highest_supported_version=TLS12
        )
    )
    if suites:
        native.NativeConf(ctx).set_ciphersuites(suites)
    return ctx


LEGACY = [
    (0x0005, "TLS-RSA-WITH-RC4-128-SHA"),
    (0x000A, "TLS-RSA-WITH-3DES-EDE-CBC-SHA"),
    (0x0004, "TLS-RSA-WITH-RC4-128-MD5"),
    (0xC011, "TLS-ECDHE-RSA-WITH-RC4-128-SHA"),
    (0xC012, "TLS-ECDHE-RSA-WITH-3DES-EDE-CBC-SHA"),
]


@pytest.mark.parametrize("suite, name", LEGACY, ids=[n for _, n in LEGACY])
def test_rc4_3des_negotiated_with_mbedtls_server(pki, trust, suite, name):
    server = MbedtlsServer(mbedtls_server_context(pki, [s for s, _ in LEGACY]))
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


def test_rc4_3des_refused_without_native(pki, trust):
    # Server offers only RC4/3DES; a client left at python-mbedtls defaults shares none.
    server = MbedtlsServer(mbedtls_server_context(pki, [0x0005, 0x000A]))
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


def test_rc4_offer_refused_by_default_server(pki, trust):
    server = MbedtlsServer(mbedtls_server_context(pki))  # python-mbedtls defaults
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
def s_server(pki, tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed")
    _, cert = pki
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    server = OpenSslServer(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))
    yield server
    server.close()


def renegotiation_client(s_server, trust, enabled: bool):
    ctx = client_context(trust)
    conf = native.NativeConf(ctx)
    conf.set_renegotiation(enabled)
    keylog: list[str] = []
    conf.set_keylog(keylog.append)
    conn = connect(s_server.port, ctx.wrap_buffers("localhost"))
    conn.handshake()
    conn.send(b"before\n")
    s_server.wait_for(b"before\n")
    s_server.command("r")  # s_server: SSL_renegotiate() + SSL_do_handshake() -> HelloRequest
    s_server.wait_for(b"HelloRequest")
    return conn, keylog


def test_renegotiation_enabled_completes(s_server, trust):
    conn, keylog = renegotiation_client(s_server, trust, enabled=True)
    s_server.command("pong")  # queued behind the renegotiation on the server side
    assert conn.recv_exactly(5) == b"pong\n"  # reading drives the client's renegotiation
    conn.send(b"after\n")
    out = s_server.wait_for(b"after\n")
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
    out = s_server.wait_for(b"no renegotiation")
    assert "Alert [length 0002], warning no_renegotiation" in out
    assert "fatal handshake_failure" in out
    assert out.count(", ClientHello") == 1
    assert len(keylog) == 1
    conn.sock.close()


# --- verify result ----------------------------------------------------------------------------


def test_verify_result(py_server, trust):
    conn = connect(py_server.port, client_context(trust).wrap_buffers("localhost"))
    nssl = native.NativeSsl(conn.buffer)
    conn.handshake()
    assert nssl.verify_result() == 0
    echo_once(conn)
    conn.close()

    other = mtls.TrustStore([mx509.CRT.from_PEM(trustme.CA().cert_pem.bytes().decode())])
    ctx = client_context(other, validate_certificates=False)  # VERIFY_OPTIONAL
    conn = connect(py_server.port, ctx.wrap_buffers("localhost"))
    nssl = native.NativeSsl(conn.buffer)
    conn.handshake()
    assert nssl.verify_result() == 0x08  # MBEDTLS_X509_BADCERT_NOT_TRUSTED
    conn.close()


# --- odds and ends ----------------------------------------------------------------------------


def psk_pair(client_setup=None):
    """Client/server buffers for an in-memory TLS 1.2 PSK handshake."""
    from tls_engine.native_selfcheck import pump_handshake

    common = dict(highest_supported_version=TLS12, ciphers=("TLS-PSK-WITH-AES-128-GCM-SHA256",))
    cctx = mtls.ClientContext(mtls.TLSConfiguration(pre_shared_key=("id", b"k" * 16), **common))
    sctx = mtls.ServerContext(mtls.TLSConfiguration(pre_shared_key_store={"id": b"k" * 16}, **common))
    if client_setup:
        client_setup(native.NativeConf(cctx))
    client, server = cctx.wrap_buffers(None), sctx.wrap_buffers()
    return client, lambda: pump_handshake(mtls, client, server)


def test_keylog_callback_errors_do_not_break_the_handshake(monkeypatch):
    caught = []
    monkeypatch.setattr("sys.unraisablehook", caught.append)

    def boom(line: str) -> None:
        raise RuntimeError("disk full")

    client, handshake = psk_pair(lambda conf: conf.set_keylog(boom))
    handshake()
    assert client.cipher() == "TLS-PSK-WITH-AES-128-GCM-SHA256"
    assert [type(u.exc_value) for u in caught] == [RuntimeError]


def test_keylog_can_be_removed():
    lines: list[str] = []

    def setup(conf):
        conf.set_keylog(lines.append)
        conf.set_keylog(None)

    _, handshake = psk_pair(setup)
    handshake()
    assert lines == []


def test_session_object():
    client, handshake = psk_pair()
    nssl = native.NativeSsl(client)
    handshake()
    saved = nssl.save_session()
    assert saved.ciphersuite == 0x00A8 and len(saved.master_secret) == 48
    saved.free()
    saved.free()  # idempotent
    with pytest.raises(TypeError):
        nssl.load_session(b"not a session")


def test_dtls_context_is_accepted():
    ctx = mtls.ClientContext(mtls.DTLSConfiguration(validate_certificates=False))
    conf = native.NativeConf(ctx)
    conf.set_ciphersuites([0xC02F])
    conf.set_renegotiation(True)
    native.NativeSsl(ctx.wrap_buffers("localhost"))
