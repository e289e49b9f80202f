"""Features that go through tls_engine.native: session resumption, key log, RC4/3DES
offers, and how the engine degrades when native is unusable."""
from __future__ import annotations

import pytest

from emulator.testing.engine_client import ClientDriver
from emulator.testing.peers import TlsServer, parse_client_hello
from tls_engine import HandshakeComplete, SessionCache, TlsClientSession, native


def client_hello_suites(hello: bytes) -> list[int]:
    return parse_client_hello(hello).cipher_suites


def run(server, settings, cache=None, key=None):
    session = TlsClientSession(settings, cache, key)
    driver = ClientDriver(session, server.port)
    result = driver.handshake()
    assert isinstance(result, HandshakeComplete), result
    assert driver.exchange(b"ping") == b"ping"
    session.close()
    driver.flush()
    server.conn.done.wait(5)
    driver.close()
    return result, session


@pytest.mark.needs_native
def test_second_connection_resumes_and_server_agrees(rsa_leaf, base_settings):
    cache = SessionCache()
    key = (1, "localhost", 443)
    with TlsServer(rsa_leaf, legacy=True) as server:
        first, _ = run(server, base_settings(), cache, key)
        assert not first.resumed and key in cache
        second, _ = run(server, base_settings(), cache, key)
        assert second.resumed and server.conn.session_reused


@pytest.mark.needs_native
def test_session_cache_disabled_means_full_handshakes(rsa_leaf, base_settings):
    cache = SessionCache()
    with TlsServer(rsa_leaf, legacy=True) as server:
        run(server, base_settings(session_cache=False), cache, "k")
        again, _ = run(server, base_settings(session_cache=False), cache, "k")
    assert not again.resumed and not server.conn.session_reused and len(cache) == 0


@pytest.mark.needs_native
def test_key_log_lines_are_nss_format(rsa_leaf, base_settings):
    lines: list[str] = []
    with TlsServer(rsa_leaf, legacy=True) as server:
        run(server, base_settings(keylog=lines.append))
    assert len(lines) == 1
    label, client_random, master = lines[0].split(" ")
    assert label == "CLIENT_RANDOM" and len(client_random) == 64 and len(master) == 96


@pytest.mark.needs_native
def test_default_offer_is_the_whole_ec2x_table_in_order(base_settings):
    from tls_engine import CIPHER_TABLE

    session = TlsClientSession(base_settings())
    session.start()
    [hello] = session.outgoing()
    offered = [s for s in client_hello_suites(hello) if s != 0x00FF]  # + renegotiation SCSV
    assert offered == list(CIPHER_TABLE)


@pytest.mark.needs_native
def test_explicit_3des_suite_is_offered_alone(base_settings):
    session = TlsClientSession(base_settings(cipher_suites=(0x000A,)))
    session.start()
    [hello] = session.outgoing()
    assert [s for s in client_hello_suites(hello) if s != 0x00FF] == [0x000A]


def test_without_native_default_offer_skips_rc4_3des(monkeypatch, base_settings):
    monkeypatch.setattr(native, "available", lambda: False)
    session = TlsClientSession(base_settings(keylog=print), SessionCache(), "k")
    session.start()
    [hello] = session.outgoing()
    offered = client_hello_suites(hello)
    assert 0x0005 not in offered and 0x000A not in offered and 0xC02F in offered
    assert any("no session resumption" in note for note in session.notes)


@pytest.mark.needs_native
def test_a_cached_session_that_cannot_be_loaded_is_dropped_and_the_handshake_is_full(
        rsa_leaf, base_settings, monkeypatch):
    """Resumption.attach degrades a native failure to a note: the entry that failed to load
    is dropped at once (never offered again, whatever happens to this handshake), the
    handshake is a full one, and its own session is cached for the next connection."""
    cache = SessionCache()
    key = (1, "localhost", 443)
    with TlsServer(rsa_leaf, legacy=True) as server:
        run(server, base_settings(), cache, key)
        assert key in cache
        load = native.NativeSsl.load_session

        def broken(self, saved):
            raise RuntimeError("cannot load it")

        monkeypatch.setattr(native.NativeSsl, "load_session", broken)
        session = TlsClientSession(base_settings(), cache, key)
        session.start()
        assert key not in cache
        assert "session not resumed: cannot load it" in session.notes
        session.close()
        full, session = run(server, base_settings(), cache, key)
        assert not full.resumed and not server.conn.session_reused and key in cache
        monkeypatch.setattr(native.NativeSsl, "load_session", load)
        again, _ = run(server, base_settings(), cache, key)
        assert again.resumed and server.conn.session_reused
