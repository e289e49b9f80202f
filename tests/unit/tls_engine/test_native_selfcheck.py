"""tls_engine.native on its own: the import-time self-check (passes on this wheel, and
reports instead of crashing when an assumption is broken), misuse, the wheel-private
helpers and their public fallbacks, and in-memory PSK handshakes (no sockets).
Features against real servers are in test_native.py.
"""
from __future__ import annotations

import mbedtls.tls as mtls
import pytest

from tls_engine import native
from tls_engine.native import layout, wrapper
from tls_engine.native.selfcheck import pump_handshake

TLS12 = mtls.TLSVersion.TLSv1_2


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
    monkeypatch.setattr(layout, attr, value)
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
    monkeypatch.setitem(layout.BASICSIZE, "MbedTLSBuffer", 560)
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


# The boundary itself (nothing outside this package reaches below the public API) is
# checked over the whole tree in test_boundary.py.


# --- the wrapper's private names (wrapper.py: self-checked, public fallbacks) -----------------


@pytest.mark.parametrize("attr", ["INPUT_BUFFER", "OUTPUT_BUFFER", "HANDSHAKE_STATE",
                                  "SUITE_ID_FN", "SUITE_NAME_FN"])
def test_a_missing_private_name_is_reported_and_falls_back(monkeypatch, attr):
    monkeypatch.setattr(wrapper, attr, "_not_in_this_wheel")
    try:
        native._init()
        assert not wrapper.private_names_usable()
        assert "has no attribute '_not_in_this_wheel'" in wrapper.reason()
        assert not native.available()  # the ctypes layer is not even tried
        assert "wrapper's private names unusable" in native.unavailable_reason()
        assert native.ciphersuite_name(0x002F) is None and native.ciphersuite_id("x") == 0
    finally:
        monkeypatch.undo()
        native._init()
    assert wrapper.private_names_usable() and native.available()


def test_private_names_that_lie_are_reported(monkeypatch):
    monkeypatch.setattr(wrapper, "INPUT_BUFFER", "_output_buffer")  # there, but the wrong ring
    try:
        native._init()
        assert "input ring room" in wrapper.reason()
    finally:
        monkeypatch.undo()
        native._init()


@pytest.mark.parametrize("private", [True, False], ids=["private", "public-fallback"])
def test_buffer_accessors_agree_with_the_ring_buffers(monkeypatch, private):
    """feed / take_outgoing / handshake_over do the same job with or without the
    private names: every byte moved, nothing overfilled, HANDSHAKE_OVER seen at the
    same step."""
    if not private:
        monkeypatch.setattr(wrapper, "_usable", False)
    client, server = psk_buffers()
    assert native.take_outgoing(client) == b"" and native.feed(server, b"") == 0
    for _ in range(50):
        for me, peer in ((client, server), (server, client)):
            try:
                me.do_handshake()
            except (mtls.WantReadError, mtls.WantWriteError):
                pass
            except ValueError:  # already over
                pass
            assert native.handshake_over(me) is wrapper.handshake_over_private(me)
            data = native.take_outgoing(me)
            assert len(me._output_buffer) == 0
            assert native.feed(peer, data) == len(data)
        if wrapper.handshake_over_private(client) and wrapper.handshake_over_private(server):
            break
    assert native.handshake_over(client) and native.handshake_over(server)
    big = bytes(40000)
    taken = native.feed(client, big)
    assert 0 < taken <= 32768 and len(client._input_buffer) == taken
    rest = native.feed(client, big[taken:])
    assert taken + rest <= 32768
    while native.feed(client, big):
        pass
    assert len(client._input_buffer) == client._input_buffer.maxlen  # filled, never overfilled


def test_suite_id_name_registry():
    assert native.ciphersuite_name(0x002F) == "TLS-RSA-WITH-AES-128-CBC-SHA"
    assert native.ciphersuite_name(0x1301) is None  # TLS 1.3: not in Mbed TLS 2.28
    assert native.ciphersuite_id("TLS-RSA-WITH-AES-128-CBC-SHA") == 0x002F
    assert native.ciphersuite_id("no-such-suite") == 0


def test_handshake_over_follows_the_handshake():
    client, handshake = psk_pair()
    assert native.handshake_over(client) is False
    handshake()
    assert native.handshake_over(client) is True


def test_set_ciphersuites_rejects_unknown_or_empty():
    conf = native.NativeConf(mtls.ClientContext(mtls.TLSConfiguration()))
    with pytest.raises(ValueError, match="0x1301"):
        conf.set_ciphersuites([0x002F, 0x1301])  # TLS 1.3 suite: not in Mbed TLS 2.28
    with pytest.raises(ValueError):
        conf.set_ciphersuites([])


# --- in-memory handshakes ------------------------------------------------------------------


def psk_buffers(client_setup=None):
    """Client/server buffers for an in-memory TLS 1.2 PSK handshake."""
    common = dict(highest_supported_version=TLS12, ciphers=("TLS-PSK-WITH-AES-128-GCM-SHA256",))
    cctx = mtls.ClientContext(mtls.TLSConfiguration(pre_shared_key=("id", b"k" * 16), **common))
    sctx = mtls.ServerContext(mtls.TLSConfiguration(pre_shared_key_store={"id": b"k" * 16}, **common))
    if client_setup:
        client_setup(native.NativeConf(cctx))
    return cctx.wrap_buffers(None), sctx.wrap_buffers()


def psk_pair(client_setup=None):
    client, server = psk_buffers(client_setup)
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
