"""Review of three changes made on 2026-12-06 (d31694d, cee9c8b, dfdec3e): each one driven
through the pty (or, for the session's own buffers, through tls_engine directly) against
OpenSSL peers (emulator.testing.peers.TlsServer, Python ssl).

* d31694d -- seclevel 0 runs Mbed TLS with VERIFY_NONE (tls_engine/config.py
  apply_native_conf): every server-certificate oddity is still accepted at seclevel 0 (an
  untrusted CA, a wrong name, an expired / not-yet-valid leaf, a self-signed leaf, a chain of
  11 linked certificates, 11 CA copies), what Mbed TLS refuses before any check is still
  refused (no suite for the server's key); seclevel 1 is untouched by the contexts seclevel 0
  built (the shared configuration / context caches), in either order and across AT+QSSLCFG
  writes between opens; session resumption and renegotiation at seclevel 0; the ML302; and
  without the native layer seclevel 0 falls back to VERIFY_OPTIONAL as documented.
* cee9c8b -- send()'s queue of pieces, jobs sealed from the caller's bytes, settle()'s
  join, outgoing() handing its bytearray on: every byte once and in order in transparent
  mode and AT+QSSLSEND, the object outgoing() returned never changed afterwards, the
  caller's bytearray changed after send() not leaking into the records.
* dfdec3e -- the demo peer's plain TCP and UDP echo on one port: both served, and many demo
  peers started at once all get their pair.
"""
from __future__ import annotations

import asyncio
import datetime
import hashlib
import re
import socket
import threading

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from emulator.testing.peers import TlsServer, make_cert
from emulator.testing.peers.pki import ServerIdentity
from tests.e2e.socket_support import escape
from tests.e2e.ssl_options_support import HOST, PORT, cfg, close, open_ssl, opened, recv_all

OK = b"\r\nOK\r\n"
NOW = datetime.datetime.now(datetime.timezone.utc)


def sha(data: bytes) -> str:
    return hashlib.sha256(bytes(data)).hexdigest()


# == d31694d: seclevel 0 = VERIFY_NONE ==============================================================
def _chain(depth: int, *, leaf_kw=None, root_copies: int = 0):
    """A leaf for HOST under `depth` intermediates, all of them and the root sent (plus
    `root_copies` more copies of the leaf's issuer)."""
    root = make_cert("Review G Root", None, ca=True)
    ints, parent = [], root
    for i in range(depth):
        parent = make_cert(f"Review G Int {i + 1}", parent, ca=True)
        ints.append(parent)
    leaf = make_cert(HOST, parent, ca=False, **({"names": (HOST,)} | (leaf_kw or {})))
    extra = [parent] * root_copies
    return ServerIdentity(leaf, *ints[::-1], root, *extra), root


def _odd(kind: str):
    """(ServerIdentity, its root) with one certificate oddity."""
    if kind == "untrusted_ca":
        return _chain(0)
    if kind == "wrong_name":
        return _chain(0, leaf_kw={"names": ("not-this-host.example",)})
    if kind == "no_name_at_all":
        return _chain(0, leaf_kw={"names": ()})
    if kind == "expired":
        return _chain(0, leaf_kw={"not_before": NOW - datetime.timedelta(days=800),
                                  "not_after": NOW - datetime.timedelta(days=400)})
    if kind == "not_yet_valid":
        return _chain(0, leaf_kw={"not_before": NOW + datetime.timedelta(days=400),
                                  "not_after": NOW + datetime.timedelta(days=800)})
    if kind == "self_signed_leaf":
        leaf = make_cert(HOST, None, ca=False, names=(HOST,))
        return ServerIdentity(leaf), leaf
    if kind == "bad_signature":
        root = make_cert("Review G Root", None, ca=True)
        leaf = make_cert(HOST, root, ca=False, names=(HOST,),
                         signing_key=ec.generate_private_key(ec.SECP256R1()))
        return ServerIdentity(leaf, root), root
    if kind == "leaf_is_a_ca":
        root = make_cert("Review G Root", None, ca=True)
        leaf = make_cert(HOST, root, ca=True, names=(HOST,))
        return ServerIdentity(leaf, root), root
    if kind == "nine_intermediates_and_root":
        return _chain(9)
    if kind == "leaf_then_11_ca_copies":
        return _chain(1, root_copies=10)
    if kind == "p384_leaf":
        root = make_cert("Review G Root", None, ca=True)
        leaf = make_cert(HOST, root, ca=False, names=(HOST,), key=ec.generate_private_key(ec.SECP384R1()))
        return ServerIdentity(leaf, root), root
    raise AssertionError(kind)


ODDITIES = ["untrusted_ca", "wrong_name", "no_name_at_all", "expired", "not_yet_valid",
            "self_signed_leaf", "bad_signature", "leaf_is_a_ca", "nine_intermediates_and_root",
            "leaf_then_11_ca_copies", "p384_leaf"]


def round_trip(host, payload: bytes, client_id: int = 0) -> None:
    assert host.send_data(client_id, payload) == b"\r\nSEND OK\r\n"
    assert recv_all(host, client_id, len(payload)) == payload


@pytest.mark.parametrize("kind", ODDITIES)
def test_seclevel_0_accepts_every_certificate_oddity_and_data_flows(ec2x, net, kind):
    """seclevel 0 (the default): +QSSLOPEN: 0,0, the server's handshake done, an echo."""
    identity, _ = _odd(kind)
    with TlsServer(identity, max_version="TLSv1.2") as server:
        net(server)
        cfg(ec2x, "seclevel", 1, 0)
        assert open_ssl(ec2x, 1) == 0
        assert server.wait_handshake().handshake_done
        round_trip(ec2x, b"odd:" + kind.encode())
        close(ec2x)


def _upload_ca(host, pem: bytes, name: str = "UFS:reviewg.pem") -> None:
    assert host.upload(name, pem).endswith(b"OK\r\n")
    cfg(host, "cacert", 1, f'"{name}"')


@pytest.mark.parametrize("kind", ["untrusted_ca", "wrong_name", "expired", "self_signed_leaf",
                                  "nine_intermediates_and_root"])
def test_seclevel_0_then_1_then_0_on_one_context_each_open_judged_by_its_own_level(ec2x, net, pki, kind):
    """The same other settings, seclevel switched between opens (AT+QSSLCFG): 0 accepts, 1
    (the shared PKI's CA, not this chain's) refuses with 566 and the server sees the
    handshake fail, 0 accepts again -- no context built for one level serves the other."""
    identity, _ = _odd(kind)
    _upload_ca(ec2x, pki.ca.cert_pem)
    cfg(ec2x, "session_cache", 1, 0)
    with TlsServer(identity, max_version="TLSv1.2") as server:
        net(server)
        for level, want in ((0, 0), (1, 566), (0, 0), (1, 566)):
            cfg(ec2x, "seclevel", 1, level)
            assert open_ssl(ec2x, 1) == want, level
            conn = server.wait_handshake()
            if want == 0:
                assert conn.handshake_done
                round_trip(ec2x, b"level0")
                close(ec2x)
            else:
                assert not conn.handshake_done and conn.handshake_error


def test_seclevel_1_first_then_0_on_the_same_settings(ec2x, net, pki):
    """The reverse order: a seclevel 1 open against the right server (verified), one against
    an untrusted server (566), then seclevel 0 takes the untrusted one, then seclevel 1
    refuses it again."""
    _upload_ca(ec2x, pki.ca.cert_pem)
    cfg(ec2x, "session_cache", 1, 0)
    cfg(ec2x, "seclevel", 1, 1)
    with TlsServer(pki.server) as good:
        net(good)
        assert open_ssl(ec2x, 1) == 0
        round_trip(ec2x, b"verified")
        close(ec2x)
    with TlsServer(pki.wrong_server) as bad:
        net(bad)
        assert open_ssl(ec2x, 1) == 566
        cfg(ec2x, "seclevel", 1, 0)
        assert open_ssl(ec2x, 1) == 0
        round_trip(ec2x, b"unverified")
        close(ec2x)
        cfg(ec2x, "seclevel", 1, 1)
        assert open_ssl(ec2x, 1) == 566
        assert not bad.wait_handshake().handshake_done


def test_two_contexts_at_seclevel_0_and_1_open_side_by_side(ec2x, net, pki):
    """Context 1 at seclevel 0 and context 2 at seclevel 1 (same suites / versions), against
    one untrusted server, sockets 0 and 1 open at once: 0 connects, 1 is refused."""
    assert ec2x.upload("UFS:reviewg2.pem", pki.ca.cert_pem).endswith(b"OK\r\n")
    cfg(ec2x, "seclevel", 2, 1)
    cfg(ec2x, "cacert", 2, '"UFS:reviewg2.pem"')
    cfg(ec2x, "seclevel", 1, 0)
    with TlsServer(pki.wrong_server) as server:
        net(server)
        assert open_ssl(ec2x, 1, client_id=0) == 0
        assert open_ssl(ec2x, 2, client_id=1) == 566
        assert open_ssl(ec2x, 1, client_id=2) == 0
        round_trip(ec2x, b"still-open", client_id=0)
        round_trip(ec2x, b"third", client_id=2)
        close(ec2x, 0)
        close(ec2x, 2)


def test_seclevel_1_still_refuses_a_chain_too_deep_for_mbedtls(ec2x, net):
    """Documented: at seclevel 1, 9 intermediates below a trusted root = 566 (-0x3000), the
    same chain at seclevel 0 connects."""
    identity, root = _odd("nine_intermediates_and_root")
    _upload_ca(ec2x, root.cert_pem)
    cfg(ec2x, "session_cache", 1, 0)
    with TlsServer(identity, max_version="TLSv1.2") as server:
        net(server)
        cfg(ec2x, "seclevel", 1, 1)
        assert open_ssl(ec2x, 1) == 566
        cfg(ec2x, "seclevel", 1, 0)
        assert open_ssl(ec2x, 1) == 0
        close(ec2x)


def test_seclevel_1_with_the_chains_own_root_verifies_an_ordinary_chain(ec2x, net):
    """Two intermediates under a trusted root: seclevel 0 then 1 both connect."""
    identity, root = _chain(2)
    _upload_ca(ec2x, root.cert_pem)
    cfg(ec2x, "session_cache", 1, 0)
    with TlsServer(identity, max_version="TLSv1.2") as server:
        net(server)
        for level in (0, 1, 0, 1):
            cfg(ec2x, "seclevel", 1, level)
            assert open_ssl(ec2x, 1) == 0, level
            round_trip(ec2x, b"chain%d" % level)
            close(ec2x)


def test_seclevel_0_with_no_suite_for_the_servers_key_still_fails(ec2x, net, pki):
    """Only ECDHE-ECDSA offered (0XC02B), an RSA-only server: OpenSSL has no shared cipher;
    seclevel 0 does not change that: 566."""
    cfg(ec2x, "ciphersuite", 1, "0XC02B")
    cfg(ec2x, "seclevel", 1, 0)
    with TlsServer(pki.server, max_version="TLSv1.2") as server:
        net(server)
        assert open_ssl(ec2x, 1) == 566
        conn = server.wait_handshake()
        assert not conn.handshake_done


def test_seclevel_0_session_resumption_with_an_untrusted_server(ec2x, net, pki):
    """session_cache 1 (default) at seclevel 0: the second open resumes (the server says
    session_reused), data flow both times; after seclevel 1 is written the cached session is
    forgotten: a full handshake, refused (566)."""
    cfg(ec2x, "seclevel", 1, 0)
    with TlsServer(pki.wrong_server, max_version="TLSv1.2") as server:
        net(server)
        assert open_ssl(ec2x, 1) == 0
        assert server.wait_handshake().session_reused is False
        round_trip(ec2x, b"first")
        close(ec2x)
        assert open_ssl(ec2x, 1) == 0
        assert server.wait_handshake().session_reused is True
        round_trip(ec2x, b"resumed")
        close(ec2x)
        _upload_ca(ec2x, pki.ca.cert_pem)
        cfg(ec2x, "seclevel", 1, 1)
        assert open_ssl(ec2x, 1) == 566
        assert not server.wait_handshake().handshake_done


def test_seclevel_0_with_renegotiation_enabled_connects_to_a_deep_chain(ec2x, net):
    """renegotiation 1 goes through the same native conf: seclevel 0 still VERIFY_NONE."""
    identity, _ = _odd("leaf_then_11_ca_copies")
    cfg(ec2x, "renegotiation", 1, 1)
    cfg(ec2x, "seclevel", 1, 0)
    with TlsServer(identity, max_version="TLSv1.2") as server:
        net(server)
        assert open_ssl(ec2x, 1) == 0
        round_trip(ec2x, b"reneg-on")
        close(ec2x)


def test_without_the_native_layer_seclevel_0_is_verify_optional_as_documented(ec2x, net, pki, monkeypatch):
    """native unavailable: an ordinary untrusted server still connects at seclevel 0; the
    11-certificate chain fails with 566 (docs/behaviour.md: VERIFY_OPTIONAL, -0x3000); with
    the native layer back, it connects again."""
    from tls_engine import native
    identity, _ = _odd("nine_intermediates_and_root")
    cfg(ec2x, "seclevel", 1, 0)
    cfg(ec2x, "session_cache", 1, 0)
    monkeypatch.setattr(native, "available", lambda: False)
    with TlsServer(pki.wrong_server) as server:
        net(server)
        assert open_ssl(ec2x, 1) == 0
        round_trip(ec2x, b"no-native")
        close(ec2x)
    with TlsServer(identity, max_version="TLSv1.2") as server:
        net(server)
        assert open_ssl(ec2x, 1) == 566
        monkeypatch.undo()
        assert open_ssl(ec2x, 1) == 0
        round_trip(ec2x, b"native-back")
        close(ec2x)


def test_ml302_seclevel_0_takes_the_deep_chain_seclevel_1_refuses_it(ml302_strict, emulator, pki):
    """ML302: seclevel 0 takes 9 intermediates + root (an RSA leaf) (+QSSLOPEN: 1,0, the server done);
    seclevel 1 with the shared CA in the slot refuses it (-1); back at 0 it connects."""
    host, advance, port = ml302_strict
    from cryptography.hazmat.primitives.asymmetric import rsa
    identity, _ = _chain(9, leaf_kw={"key": rsa.generate_private_key(65537, 2048)})   # (RSA suites)
    host.write(b"AT+QSECWRITE=0\r\n")
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(pki.ca.cert_pem + b"\x1a")
    assert host.read_until(re.compile(rb"\r\n(OK|ERROR)\r\n")).endswith(OK)
    with TlsServer(identity, max_version="TLSv1.2") as server:
        emulator.router.add_map(HOST, 443, "127.0.0.1", server.port)
        for level, code in ((0, b"0"), (1, b"-1"), (0, b"0")):
            assert host.at(f'AT+QSSLCFG="seclevel",0,{level}') == OK
            assert host.at(f'AT+QSSLOPEN=1,0,"{HOST}",443,0') == OK
            assert host.read_until(re.compile(rb"\+QSSLOPEN: 1,-?\d+\r\n"), 15).endswith(
                b"+QSSLOPEN: 1," + code + b"\r\n")
            conn = server.wait_handshake()
            assert conn.handshake_done is (code == b"0")
            if code == b"0":
                host.write(b"AT+QSSLCLOSE=1\r\n")
                assert host.read_until(b"1,CLOSE OK\r\n", 10) == OK + b"\r\n1,CLOSE OK\r\n"


PSK_HEX = "00112233445566778899aabbccddeeff"


def _s_server_files(tmp_path, identity: ServerIdentity) -> list[str]:
    cert, key, chain = tmp_path / "leaf.pem", tmp_path / "leaf.key", tmp_path / "chain.pem"
    cert.write_bytes(identity.leaf.cert_pem)
    key.write_bytes(identity.leaf.key_pem)
    chain.write_bytes(b"".join(c.cert_pem for c in identity.chain))
    return ["-cert", str(cert), "-key", str(key), "-cert_chain", str(chain)]


def _wait_open(host, client_id: int = 0, timeout: float = 15) -> int:
    return opened(host, client_id, timeout)


@pytest.mark.parametrize("kind", ["untrusted_ca", "expired", "wrong_name", "nine_intermediates_and_root"])
def test_dtls_seclevel_0_accepts_the_oddity_from_openssl_s_server(ec2x, net, emulator, tmp_path, kind):
    """DTLS 1.2 (AT+QSSLCFG="dtls",1,1) at seclevel 0 against `openssl s_server -dtls1_2`
    sending the odd chain: +QSSLOPEN: 0,0, a line up arrives, a line down is read back."""
    from emulator.testing.peers import OpenSslServer
    identity, _ = _odd(kind)
    server = OpenSslServer(["-dtls1_2", *_s_server_files(tmp_path, identity)])
    try:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        cfg(ec2x, "dtls", 1, 1)
        cfg(ec2x, "seclevel", 1, 0)
        assert open_ssl(ec2x, 1, timeout=15) == 0
        assert ec2x.send_data(0, b"dtls-up-" + kind.encode() + b"\n") == b"\r\nSEND OK\r\n"
        server.wait_for_output(re.escape(b"dtls-up-" + kind.encode()), 10)
        server.write(b"dtls-down\n")
        assert recv_all(ec2x, 0, 10) == b"dtls-down\n"
        close(ec2x)
    finally:
        server.stop()


def test_dtls_seclevel_1_refuses_what_seclevel_0_took_from_the_same_server(ec2x, net, emulator, tmp_path, pki):
    from emulator.testing.peers import OpenSslServer
    identity, _ = _odd("untrusted_ca")
    server = OpenSslServer(["-dtls1_2", *_s_server_files(tmp_path, identity)])
    try:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        cfg(ec2x, "dtls", 1, 1)
        cfg(ec2x, "seclevel", 1, 0)
        assert open_ssl(ec2x, 1, timeout=15) == 0
        close(ec2x)
        _upload_ca(ec2x, pki.ca.cert_pem)
        cfg(ec2x, "seclevel", 1, 1)
        assert open_ssl(ec2x, 1, timeout=15) == 566
    finally:
        server.stop()


def test_tls_psk_suite_at_seclevel_0_against_openssl_s_server(ec2x, net, emulator):
    """A certificate-less PSK suite (TLS 1.2, `s_server -nocert -psk`) at seclevel 0: 0,
    data both ways (VERIFY_NONE has nothing to skip and breaks nothing)."""
    from emulator.testing.peers import OpenSslServer
    server = OpenSslServer(["-nocert", "-tls1_2", "-psk", PSK_HEX, "-psk_identity", "modem-1",
                            "-cipher", "PSK:@SECLEVEL=0"])
    try:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        cfg(ec2x, "psk", 1, '"modem-1"', f'"{PSK_HEX}"')
        cfg(ec2x, "seclevel", 1, 0)
        assert open_ssl(ec2x, 1, timeout=15) == 0
        server.wait_for_output(rb"CIPHER is \S*PSK", 10)
        assert ec2x.send_data(0, b"psk-up\n") == b"\r\nSEND OK\r\n"
        server.wait_for_output(rb"psk-up", 10)
        server.write(b"psk-down\n")
        assert recv_all(ec2x, 0, 9) == b"psk-down\n"
        close(ec2x)
    finally:
        server.stop()


# -- a proxy in front of an OpenSSL server rewriting its Certificate message ----------------------
class CertRewritingProxy:
    """127.0.0.1:<port> -> the TlsServer; the server's first flight (up to ServerHelloDone) is
    re-cut into one handshake message per record and its Certificate message body replaced
    by rewrite(body) (the Finished then no longer matches -- Mbed TLS never gets that far)."""

    def __init__(self, target: int, rewrite) -> None:
        self.target, self.rewrite = target, rewrite
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.from_client = bytearray()
        self.done = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        server = socket.create_connection(("127.0.0.1", self.target))

        def up():
            try:
                while data := client.recv(65536):
                    self.from_client += data
                    server.sendall(data)
            except OSError:
                pass
            finally:
                try:
                    server.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
        threading.Thread(target=up, daemon=True).start()
        buf, msgs, flight_done = b"", b"", False
        try:
            while data := server.recv(65536):
                if flight_done:
                    client.sendall(data)
                    continue
                buf += data
                while len(buf) >= 5 and len(buf) >= 5 + int.from_bytes(buf[3:5], "big"):
                    size = int.from_bytes(buf[3:5], "big")
                    assert buf[0] == 22, buf[:5]
                    msgs += buf[5:5 + size]
                    version, buf = buf[1:3], buf[5 + size:]
                out = b""
                while len(msgs) >= 4 and len(msgs) >= 4 + int.from_bytes(msgs[1:4], "big"):
                    n = int.from_bytes(msgs[1:4], "big")
                    kind, body, msgs = msgs[0], msgs[4:4 + n], msgs[4 + n:]
                    if kind == 11:
                        body = self.rewrite(body)
                    msg = bytes([kind]) + len(body).to_bytes(3, "big") + body
                    out += b"\x16" + version + len(msg).to_bytes(2, "big") + msg
                    if kind == 14:
                        flight_done = True
                client.sendall(out)
                if flight_done and buf:
                    client.sendall(buf)
        except OSError:
            pass
        finally:
            client.close()
            server.close()
            self.done.set()

    def close(self) -> None:
        self.listener.close()


def _entries(body: bytes) -> list[bytes]:
    total, pos, out = int.from_bytes(body[:3], "big"), 3, []
    while pos < 3 + total:
        n = int.from_bytes(body[pos:pos + 3], "big")
        out.append(body[pos + 3:pos + 3 + n])
        pos += 3 + n
    return out


def _pack(*entries: bytes) -> bytes:
    inner = b"".join(len(e).to_bytes(3, "big") + e for e in entries)
    return len(inner).to_bytes(3, "big") + inner


CERT_REWRITES = {
    "empty_list": lambda body: _pack(),
    "garbage_leaf": lambda body: _pack(b"\x30\x03\x02\x01\x01"),
    "leaf_then_garbage_entry": lambda body: _pack(_entries(body)[0], b"\x30\x82\x00\x10" + bytes(4)),
    "inner_length_one_short": lambda body: (int.from_bytes(body[:3], "big") - 1).to_bytes(3, "big") + body[3:],
    "entry_length_past_the_list": lambda body: body[:3] + (int.from_bytes(body[3:6], "big") + 5).to_bytes(3, "big") + body[6:],
    "truncated_leaf_der": lambda body: _pack(_entries(body)[0][:-7]),
}


@pytest.mark.parametrize("kind", list(CERT_REWRITES))
def test_seclevel_0_malformed_certificate_message_fails_once_and_the_id_opens_again(ec2x, net, emulator, pki,
                                                                                    strict_log, kind):
    """Mbed TLS refuses these before any check (it parses the message at VERIFY_NONE too):
    +QSSLOPEN: 0,566 exactly once, no ClientKeyExchange sent (the modem's last record is an
    alert), no error / traceback in the log; then the same id opens a normal server."""
    with TlsServer(pki.server, max_version="TLSv1.2") as server:
        proxy = CertRewritingProxy(server.port, CERT_REWRITES[kind])
        try:
            emulator.router.add_map(HOST, PORT, "127.0.0.1", proxy.port)
            cfg(ec2x, "seclevel", 1, 0)
            assert open_ssl(ec2x, 1) == 566
            assert proxy.done.wait(10)
            assert ec2x.quiet_for(0.3) == b""
            assert bytes(ec2x.transcript).count(b"+QSSLOPEN: 0,") == 1
            data = bytes(proxy.from_client)
            recs, pos = [], 0
            while pos + 5 <= len(data):
                recs.append(data[pos])
                pos += 5 + int.from_bytes(data[pos + 3:pos + 5], "big")
            assert recs[0] == 22 and 20 not in recs        # no CCS: no key exchange finished
            assert recs[-1] == 21 or recs == [22]           # an alert, or silence after the hello
        finally:
            proxy.close()
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        assert open_ssl(ec2x, 1) == 0
        round_trip(ec2x, b"after-" + kind.encode())
        close(ec2x)


# == cee9c8b: send()'s pieces, sealed jobs, outgoing() handing its buffer on ========================
SIZES = [1, 4095, 4096, 65535, 65536, 65537, 200000]


def payload_of(size: int, tag: int) -> bytes:
    """`size` bytes whose content tells where each byte belongs (a lost, doubled or
    reordered piece shows in the digest)."""
    block = hashlib.sha256(b"%d:%d" % (tag, size)).digest() * (size // 32 + 1)
    return bytes(b ^ (i & 0xFF) for i, b in enumerate(block[:size]))


def transparent(host, ctx: int = 1) -> None:
    assert host.at(f'AT+QSSLOPEN=1,{ctx},0,"{HOST}",{PORT},2', timeout=15) == b"\r\nCONNECT\r\n"


def received_exactly(server, want: bytes, advance=None, timeout: float = 15) -> None:
    conn = server.wait_handshake()
    import time
    deadline = time.monotonic() + timeout
    while len(conn.received) < len(want) and time.monotonic() < deadline:
        if advance is not None:
            advance(0.05)
        else:
            time.sleep(0.01)
    assert len(conn.received) == len(want)
    assert sha(conn.received) == sha(want)


@pytest.mark.parametrize("renegotiation", [0, 1])
@pytest.mark.parametrize("order", ["ascending", "descending"])
def test_transparent_every_size_class_arrives_once_in_order(ec2x_strict, emulator, pki, order, renegotiation):
    """Transparent mode: 1, 4095, 4096, 65535, 65536, 65537, 200000 bytes written one after
    the other without waiting (jobs in flight while more arrives), then "+++" and
    AT+QSSLCLOSE: the server decrypts exactly the concatenation, then close_notify."""
    host, advance, port = ec2x_strict
    sizes = SIZES if order == "ascending" else SIZES[::-1]
    pieces = [payload_of(n, i) for i, n in enumerate(sizes)]
    cfg(host, "renegotiation", 1, renegotiation)       # (1: no seal jobs)
    with TlsServer(pki.server, mode="sink") as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        transparent(host)
        for piece in pieces:
            host.write(piece)
        want = b"".join(pieces)
        received_exactly(server, want)
        assert escape(host, advance) == OK
        assert host.at("AT+QSSLCLOSE=0") == OK
        conn = server.wait_done(timeout=10)
        assert conn.close_notify_received
        assert sha(conn.received) == sha(want)


@pytest.mark.parametrize("size", [4096, 65537, 200000])
def test_transparent_escape_right_behind_a_big_write_then_close_loses_nothing(ec2x_strict, emulator, pki, size):
    """The guard time and "+++" follow the write at once (its seal jobs may still be in
    flight / queued), then AT+QSSLCLOSE: every byte before close_notify, "+++" not among
    them."""
    host, advance, port = ec2x_strict
    data = payload_of(size, 7)
    with TlsServer(pki.server, mode="sink") as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        transparent(host)
        host.write(data)
        emulator.wait_received(port, host.written, 15)
        assert escape(host, advance) == OK
        assert host.at("AT+QSSLCLOSE=0") == OK
        conn = server.wait_done(timeout=10)
        assert conn.close_notify_received
        assert len(conn.received) == size and sha(conn.received) == sha(data)


def test_transparent_server_closes_while_data_is_queued_nothing_doubled(ec2x_strict, emulator, pki):
    """The server reads 70,000 bytes then sends close_notify and closes while the host goes
    on writing: whatever it decrypted is a prefix of what was written (never a byte twice,
    never out of order), and the modem reports the end (NO CARRIER)."""
    host, advance, port = ec2x_strict
    data = payload_of(400_000, 9)

    def handler(conn):
        while len(conn.received) < 70_000 and conn.recv():
            pass
        conn.close()
    with TlsServer(pki.server, handler=handler) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        transparent(host)
        host.write(data)
        assert host.read_until(b"\r\nNO CARRIER\r\n", 15).endswith(b"\r\nNO CARRIER\r\n")
        conn = server.wait_done(timeout=10)
        got = bytes(conn.received)
        assert len(got) >= 70_000 and got == data[:len(got)]


@pytest.mark.parametrize("renegotiation", [0, 1])
def test_buffer_mode_qsslsend_sizes_and_many_sends_arrive_in_order(ec2x, net, pki, renegotiation):
    """AT+QSSLSEND of 1, 2, 1459, 1460 bytes and 40 sends of 1460 back to back (renegotiation
    0 and 1: 1 disables jobs): the server decrypts exactly the concatenation."""
    cfg(ec2x, "renegotiation", 1, renegotiation)
    sizes = [1, 2, 1459, 1460] + [1460] * 40
    pieces = [payload_of(n, i) for i, n in enumerate(sizes)]
    with TlsServer(pki.server, mode="sink") as server:
        net(server)
        assert open_ssl(ec2x, 1) == 0
        for piece in pieces:
            assert ec2x.send_data(0, piece) == b"\r\nSEND OK\r\n"
        want = b"".join(pieces)
        received_exactly(server, want)
        close(ec2x)
        conn = server.wait_done(timeout=10)
        assert conn.close_notify_received and sha(conn.received) == sha(want)


def test_push_mode_sends_and_echo_round_trips_exact(ec2x, net, pki):
    """Direct push mode (access mode 1): sends of 1 .. 1460 bytes to an echo server, every
    echo pushed back exactly."""
    with TlsServer(pki.server, mode="echo") as server:
        net(server)
        assert ec2x.at(f'AT+QSSLOPEN=1,1,0,"{HOST}",{PORT},1') == OK
        assert opened(ec2x, 0) == 0
        for i, n in enumerate([1, 17, 1460, 1000, 1460]):
            piece = payload_of(n, 100 + i)
            assert ec2x.send_data(0, piece) == b"\r\nSEND OK\r\n"
            got = b""
            while len(got) < n:
                head = ec2x.read_until(re.compile(rb'\+QSSLURC: "recv",0,(\d+)\r\n'), 10)
                k = int(re.search(rb",(\d+)\r\n$", head).group(1))
                got += ec2x.read_exactly(k)
                assert ec2x.read_exactly(2) == b"\r\n"
            assert got == piece
        assert ec2x.at("AT+QSSLCLOSE=0") == OK


def test_transparent_on_a_shaped_link_delivers_the_exact_bytes(ec2x_strict, emulator, pki):
    """control "net" latency 30 ms, 50,000 kbit/s (a ShapedLink on every new socket): the
    size classes (335,000 bytes) written in transparent mode arrive exactly (the modem clock
    advanced until they do; the host writes on a thread, the pty may push back)."""
    import time
    host, advance, port = ec2x_strict
    pieces = [payload_of(n, 50 + i) for i, n in enumerate(SIZES)]
    want = b"".join(pieces)
    assert emulator.control("net", latency_ms=30, kbps=50_000) == {"ok": True}
    with TlsServer(pki.server, mode="sink") as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        host.write(f'AT+QSSLOPEN=1,1,0,"{HOST}",{PORT},2\r'.encode())
        deadline = time.monotonic() + 10
        while b"\r\nCONNECT\r\n" not in bytes(host.transcript) and time.monotonic() < deadline:
            advance(0.05)                          # (the handshake crosses the link: modem time)
            host.quiet_for(0.01)
        assert bytes(host.transcript).endswith(b"\r\nCONNECT\r\n")
        writer = threading.Thread(target=lambda: [host.write(p) for p in pieces], daemon=True)
        writer.start()
        received_exactly(server, want, advance=advance)
        writer.join(5)
        assert not writer.is_alive()
        assert escape(host, advance) == OK
        mark = len(host.transcript)
        host.write(b"AT+QSSLCLOSE=0\r")
        deadline = time.monotonic() + 10
        while OK not in bytes(host.transcript[mark:]) and time.monotonic() < deadline:
            advance(0.05)                          # (close_notify crosses the link)
            host.quiet_for(0.01)
        assert bytes(host.transcript[mark:]) == OK
        conn = server.wait_done(timeout=10)
        assert conn.close_notify_received
        assert sha(conn.received) == sha(want)


# -- the session itself (tls_engine.TlsClientSession over ClientDriver, an OpenSSL server) ----------
def _session(server, offload: bool = True):
    from emulator.testing.engine_client import ClientDriver
    from tls_engine import HandshakeComplete, TlsClientSession
    from tls_engine.settings import TlsSettings
    session = TlsClientSession(TlsSettings(server_name=HOST, seclevel=0))
    session.offload = offload
    driver = ClientDriver(session, server.port)
    assert isinstance(driver.handshake(), HandshakeComplete)
    return driver


class Keeper:
    """Every object outgoing() returned, with its bytes at that moment; they go to the server
    in order (the socket gets a copy, the object is kept as handed out)."""

    def __init__(self, driver) -> None:
        self.driver, self.kept = driver, []

    def take(self) -> None:
        for chunk in self.driver.session.outgoing():
            self.kept.append((chunk, bytes(chunk)))
            self.driver.sock.sendall(bytes(chunk))

    def unchanged(self) -> bool:
        return all(bytes(obj) == snap for obj, snap in self.kept)


def _run_jobs(session, keeper) -> None:
    while (job := session.take_job()) is not None:
        t = threading.Thread(target=job.run)
        t.start()
        t.join(10)
        session.settle()
        keeper.take()


def _finish(driver, keeper, server, payload: bytes) -> None:
    driver.session.close()
    keeper.take()
    conn = server.wait_done(timeout=10)
    driver.close()
    assert conn.close_notify_received
    assert len(conn.received) == len(payload) and sha(conn.received) == sha(payload)


@pytest.mark.needs_native
def test_what_outgoing_returned_is_never_changed_by_later_sends_jobs_and_close():
    """Keep every object outgoing() returned: small sends (records now), big sends (jobs run
    on a thread, settle() joins their records), sends queued behind a job, seal_all, close:
    none of those objects changes afterwards, and the server decrypts exactly what was sent."""
    from tls_engine import session as session_module
    with TlsServer(mode="sink", legacy=True) as server:
        driver = _session(server)
        session, keeper = driver.session, Keeper(driver)
        sent = []

        def send(data):
            sent.append(bytes(data))
            session.send(data)
        send(b"a" * 10)
        keeper.take()
        send(payload_of(200_000, 1))                 # jobs
        first = session.take_job()
        assert first is not None
        send(b"b")                                  # behind the job: queued pieces
        send(payload_of(4096, 2))
        send(bytearray(payload_of(65537, 3)))
        t = threading.Thread(target=first.run)
        t.start()
        t.join(10)
        session.settle()
        keeper.take()
        _run_jobs(session, keeper)
        keeper.take()
        send(payload_of(session_module.OFFLOAD_MIN - 1, 4))   # records now, into a new buffer
        keeper.take()
        send(payload_of(65536, 5))
        session.seal_all()
        keeper.take()
        send(b"c" * 3)
        _finish(driver, keeper, server, b"".join(sent))
        assert len(keeper.kept) >= 5
        assert keeper.unchanged()
        assert len({id(obj) for obj, _ in keeper.kept}) == len(keeper.kept)


@pytest.mark.needs_native
@pytest.mark.parametrize("kind", ["bytearray", "memoryview"])
def test_a_mutable_buffer_changed_after_send_does_not_change_the_records(kind):
    """send() of a bytearray / memoryview of 4096 .. 200000 bytes (a job's size, and behind a
    job), the caller then overwrites its buffer before the job runs: the server decrypts
    what the buffer held at send()."""
    with TlsServer(mode="sink", legacy=True) as server:
        driver = _session(server)
        session, keeper = driver.session, Keeper(driver)
        sent = []
        buffers = []
        for i, n in enumerate([200_000, 4096, 65536, 1, 70_000]):
            buf = bytearray(payload_of(n, 20 + i))
            sent.append(bytes(buf))
            buffers.append(buf)
            session.send(buf if kind == "bytearray" else memoryview(buf))
        for buf in buffers:
            buf[:] = b"\xee" * len(buf)
        _run_jobs(session, keeper)
        _finish(driver, keeper, server, b"".join(sent))
        assert keeper.unchanged()


@pytest.mark.needs_native
def test_close_while_sends_are_queued_behind_a_job_seals_them_all_before_close_notify():
    with TlsServer(mode="sink", legacy=True) as server:
        driver = _session(server)
        session, keeper = driver.session, Keeper(driver)
        parts = [payload_of(n, 40 + i) for i, n in enumerate(SIZES)]
        for part in parts:
            session.send(part)
        assert session.take_job() is not None           # handed out, never run by "the worker"
        _finish(driver, keeper, server, b"".join(parts))
        assert keeper.unchanged()


@pytest.mark.needs_native
def test_echo_received_while_a_job_is_out_then_more_sends():
    """An echo server: a small send echoed back arrives while a big job is out (receive()
    settles it first); more sends after; every outgoing() object unchanged, the echo exact."""
    from tls_engine import AppData
    with TlsServer(mode="echo", legacy=True) as server:
        driver = _session(server)
        session, keeper = driver.session, Keeper(driver)
        session.send(b"ping-1")
        keeper.take()
        big = payload_of(150_000, 60)
        session.send(big)
        job = session.take_job()
        assert job is not None
        driver.sock.settimeout(5)
        data = driver.sock.recv(65536)                   # the echo of ping-1's record
        session.receive(data)                            # settles the job (runs it here)
        keeper.take()
        got = b"".join(e.data for e in session.events() if isinstance(e, AppData))
        _run_jobs(session, keeper)
        session.send(b"tail")
        keeper.take()
        want = b"ping-1" + big + b"tail"
        import time
        deadline = time.monotonic() + 10
        while len(got) < len(want) and time.monotonic() < deadline:
            chunk = driver.sock.recv(65536)
            if not chunk:
                break
            session.receive(chunk)
            keeper.take()
            got += b"".join(e.data for e in session.events() if isinstance(e, AppData))
        assert got == want
        assert keeper.unchanged()
        driver.close()


# == dfdec3e: the demo peer's plain echo, TCP and UDP on one port ==================================
def _tcp_echo(addr, data: bytes) -> bytes:
    with socket.create_connection(addr, timeout=5) as s:
        s.sendall(data)
        got = b""
        while len(got) < len(data):
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


def _udp_echo(addr, data: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(data, addr)
        got, src = s.recvfrom(65536)
        assert src == addr
        return got


def test_make_runs_demo_peer_serves_the_plain_echo_route_over_tcp_and_udp(tmp_path):
    """BackgroundEmulator(offline=True, demo=True) (what `make run` / `modem-emulator --demo
    --offline` start): an EC2x's AT+QIOPEN "TCP" and "UDP" to 220.180.239.212:8009 both get
    their bytes echoed (AT+QIRD), and the demo's route for it is one 127.0.0.1 port that
    answers TCP and UDP alike."""
    from emulator.io.app import BackgroundEmulator
    from emulator.tools.demo_peer import PLAIN_ECHO_ROUTE
    from tests.conftest import modem_factory
    from tests.e2e.socket_support import qiopen, qird, qisend
    with BackgroundEmulator(offline=True, demo=True) as emu:
        addr = emu.run(lambda: emu.emulator.demo.routes[PLAIN_ECHO_ROUTE])
        assert addr[0] == "127.0.0.1"
        assert _tcp_echo(addr, b"tcp-direct") == b"tcp-direct"
        assert _udp_echo(addr, b"udp-direct") == b"udp-direct"
        factory = modem_factory(emu, tmp_path)
        make = next(factory)
        host, _ = make("ec2x")
        assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
        qiopen(host, 0, "TCP", "220.180.239.212", 8009)
        qiopen(host, 1, "UDP", "220.180.239.212", 8009)
        assert qisend(host, 0, b"hello tcp") == b"\r\nSEND OK\r\n"
        host.seen(b'+QIURC: "recv",0\r\n')
        assert qird(host, 0)[1] == b"hello tcp"
        assert qisend(host, 1, b"hello udp") == b"\r\nSEND OK\r\n"
        host.seen(b'+QIURC: "recv",1\r\n')
        head, data = qird(host, 1)
        assert data == b"hello udp"
        assert head == b"\r\n+QIRD: 9\r\n"
        assert host.at("AT+QICLOSE=0") == OK
        assert host.at("AT+QICLOSE=1") == OK
        try:
            next(factory)
        except StopIteration:
            pass


def test_many_demo_peers_at_once_each_gets_one_port_for_tcp_and_udp_echo():
    """12 demo peers started concurrently in one loop while 6000 UDP ports of the ephemeral
    range are held by "another program" (so some TCP picks meet EADDRINUSE for UDP and are
    retried): every peer starts, the 12 plain echo ports differ, each echoes over TCP and UDP
    on that one number; closed, each port is free for TCP and UDP again."""
    from emulator.tools.demo_peer import PLAIN_ECHO_ROUTE, start_demo_peer
    held = []
    try:
        for _ in range(6000):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            held.append(s)

        async def main():
            peers = await asyncio.gather(*[start_demo_peer() for _ in range(12)])
            try:
                addrs = [p.routes[PLAIN_ECHO_ROUTE] for p in peers]
                loop = asyncio.get_running_loop()
                for i, addr in enumerate(addrs):
                    assert await loop.run_in_executor(None, _tcp_echo, addr, b"t%d" % i) == b"t%d" % i
                    assert await loop.run_in_executor(None, _udp_echo, addr, b"u%d" % i) == b"u%d" % i
                return addrs
            finally:
                for p in peers:
                    await p.close()
        addrs = asyncio.run(main())
        assert len(set(addrs)) == 12
        held_ports = {s.getsockname()[1] for s in held}
        assert not held_ports & {port for _, port in addrs}
        for _, port in addrs:
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                with socket.socket(socket.AF_INET, kind) as probe:
                    probe.bind(("127.0.0.1", port))
    finally:
        for s in held:
            s.close()


def _curve_identity(curve, where="leaf"):
    if where == "leaf":
        root = make_cert("Review G Root", None, ca=True)
        leaf = make_cert(HOST, root, ca=False, names=(HOST,), key=ec.generate_private_key(curve))
    else:
        root = make_cert("Review G Root", None, ca=True, key=ec.generate_private_key(curve))
        leaf = make_cert(HOST, root, ca=False, names=(HOST,))
    return ServerIdentity(leaf, root), root


P256_OID = bytes.fromhex("06082a8648ce3d030107")
PRIME192V2_OID = bytes.fromhex("06082a8648ce3d030102")      # same length, unknown to Mbed TLS


def _unknown_curve(der: bytes) -> bytes:
    assert der.count(P256_OID) == 1
    return der.replace(P256_OID, PRIME192V2_OID)


@pytest.mark.parametrize("where", ["leaf", "extra_entry"])
def test_seclevel_0_an_ecdsa_key_on_a_curve_mbedtls_does_not_know_fails_the_open(ec2x, net, emulator, pki,
                                                                                 strict_log, where):
    """An ECDSA server whose leaf's key names prime192v2 (the leaf itself, or a copy sent as an
    extra entry behind the genuine leaf): Mbed TLS parses every entry at VERIFY_NONE too and
    cannot read that key: 566 once, nothing after the modem's alert."""
    def rewrite(body):
        leaf = _entries(body)[0]
        return _pack(_unknown_curve(leaf)) if where == "leaf" else _pack(leaf, _unknown_curve(leaf))
    with TlsServer(pki.server_ec, max_version="TLSv1.2") as server:
        _refused_through_the_proxy_then_direct_opens(ec2x, emulator, server, rewrite)


def _refused_through_the_proxy_then_direct_opens(ec2x, emulator, server, rewrite) -> None:
    """At seclevel 0, an open through a proxy rewriting the server's Certificate with
    `rewrite` fails 566 once, the modem sending no ChangeCipherSpec; the same id then opens
    the server directly."""
    proxy = CertRewritingProxy(server.port, rewrite)
    try:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", proxy.port)
        cfg(ec2x, "seclevel", 1, 0)
        assert open_ssl(ec2x, 1) == 566
        assert proxy.done.wait(10)
        assert 20 not in _record_types(bytes(proxy.from_client))
    finally:
        proxy.close()
    emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
    assert open_ssl(ec2x, 1) == 0
    close(ec2x)


def _record_types(data: bytes) -> list[int]:
    out, pos = [], 0
    while pos + 5 <= len(data):
        out.append(data[pos])
        pos += 5 + int.from_bytes(data[pos + 3:pos + 5], "big")
    return out


@pytest.mark.parametrize("suite", ["0XC02F", "0X009C"])
def test_seclevel_0_a_certificate_of_the_wrong_key_type_for_the_suite_fails_the_open(ec2x, net, emulator, pki,
                                                                                   strict_log, suite):
    """An RSA suite (ECDHE-RSA 0XC02F, RSA key exchange 0X009C) whose Certificate carries an
    ECDSA leaf instead (the shared PKI's server_ec): VERIFY_NONE skips the certificate's
    usage check, but Mbed TLS still cannot use the key (ServerKeyExchange signature / the
    encrypted premaster): 566 once, no ChangeCipherSpec sent."""
    from cryptography import x509 as cx509
    from cryptography.hazmat.primitives.serialization import Encoding
    ec_der = cx509.load_pem_x509_certificate(pki.server_ec.cert_pem).public_bytes(Encoding.DER)
    cfg(ec2x, "ciphersuite", 1, suite)
    with TlsServer(pki.server, max_version="TLSv1.2", ciphers="ALL:@SECLEVEL=0") as server:
        _refused_through_the_proxy_then_direct_opens(ec2x, emulator, server, lambda body: _pack(ec_der))


@pytest.mark.parametrize("where", ["leaf", "root"])
@pytest.mark.parametrize("curve", ["SECP256K1", "BrainpoolP256R1", "SECP521R1", "SECP224R1", "SECP192R1"])
def test_less_common_curves_connect_at_seclevel_0_and_1_alike(ec2x, net, curve, where):
    """A leaf (or its root) on a curve Mbed TLS supports but OpenSSL's defaults do not
    prefer: seclevel 0 and seclevel 1 (that root trusted) both connect -- VERIFY_NONE
    accepts nothing less than seclevel 1 does."""
    identity, root = _curve_identity(getattr(ec, curve)(), where)
    _upload_ca(ec2x, root.cert_pem)
    cfg(ec2x, "session_cache", 1, 0)
    with TlsServer(identity, max_version="TLSv1.2", ciphers="DEFAULT:@SECLEVEL=0") as server:
        net(server)
        for level in (0, 1):
            cfg(ec2x, "seclevel", 1, level)
            assert open_ssl(ec2x, 1) == 0, level
            round_trip(ec2x, b"curve")
            close(ec2x)


def test_dtls_transparent_mode_delivers_every_byte_once_in_order(ec2x_strict, emulator, tmp_path):
    """DTLS (no seal jobs: records of at most 1460 bytes, one per datagram) in transparent
    mode: 1 + 4095 + 4096 + 20000 printable bytes written at once reach `openssl s_server
    -dtls1_2` exactly once, in order, before "+++" and AT+QSSLCLOSE."""
    from emulator.testing.peers import OpenSslServer
    host, advance, port = ec2x_strict
    identity, _ = _odd("untrusted_ca")
    server = OpenSslServer(["-dtls1_2", *_s_server_files(tmp_path, identity)])
    try:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        cfg(host, "dtls", 1, 1)
        transparent(host)
        pieces = [bytes(0x41 + (i + k) % 26 for i in range(n)) for k, n in enumerate([1, 4095, 4096, 20000])]
        want = b"<" + b"".join(pieces) + b">"
        host.write(want[:1])
        for piece in pieces:
            host.write(piece)
        host.write(b">")
        server.wait_for_output(re.escape(want), 10)
        assert server.stdout.count(b"<") == 1 and server.stdout.count(want) == 1
        assert escape(host, advance) == OK
        assert host.at("AT+QSSLCLOSE=0") == OK
    finally:
        server.stop()


@pytest.mark.parametrize("copies, want", [(25, 0), (50, 566)])
def test_seclevel_0_chain_length_limit_is_the_16k_certificate_message(ec2x, net, copies, want):
    """VERIFY_NONE takes "a chain of any length" that fits one record: a leaf and 25 CA
    copies (~9 KB) connects; 50 copies (~17.5 KB) needs a Certificate message over 16 KiB,
    which is always split across records and Mbed TLS 2.28 reassembles none (documented:
    566, the server's handshake not done)."""
    identity, _ = _chain(1, root_copies=copies - 1)
    size = sum(len(c.cert.public_bytes(__import__("cryptography.hazmat.primitives.serialization",
                                                   fromlist=["Encoding"]).Encoding.DER)) + 3
               for c in (identity.leaf, *identity.chain))
    assert (size > 16384) is (want != 0)
    cfg(ec2x, "seclevel", 1, 0)
    with TlsServer(identity, max_version="TLSv1.2") as server:
        net(server)
        assert open_ssl(ec2x, 1) == want
        assert server.wait_handshake().handshake_done is (want == 0)
        if want == 0:
            round_trip(ec2x, b"long chain")
            close(ec2x)


@pytest.mark.needs_native
@pytest.mark.parametrize("kind", ["nine_intermediates_and_root", "untrusted_ca"])
def test_seclevel_0_server_initiated_renegotiation_with_an_odd_chain_keeps_the_socket(ec2x, net, tmp_path, kind):
    """renegotiation 1, seclevel 0, `openssl s_server -tls1_2` sending the odd chain: the
    server's "r" (HelloRequest, a full handshake, its Certificate again) completes; data both
    ways after it; the socket still connected (the new handshake's chain is not walked either)."""
    from emulator.testing.peers import OpenSslServer
    from tests.e2e.ssl_options_support import s_server_round_trip
    identity, _ = _odd(kind)
    server = OpenSslServer(["-tls1_2", *_s_server_files(tmp_path, identity)])
    try:
        net(server)
        cfg(ec2x, "renegotiation", 1, 1)
        cfg(ec2x, "seclevel", 1, 0)
        assert open_ssl(ec2x, 1) == 0
        server.wait_for_output(rb"CIPHER is", 10)
        mark = server.mark()
        server.write(b"r\n")
        server.wait_for_output(rb"SSL_do_handshake -> 1", 10, since=mark)
        s_server_round_trip(ec2x, server, b"after renegotiation " + kind.encode() + b"\n", b"yes\n", since=mark)
        m = re.search(rb'\+QSSLSTATE: 0,"SSLClient","[^"]*",\d+,\d+,(\d+),', ec2x.at("AT+QSSLSTATE=0"))
        assert m and m.group(1) == b"2"                  # still connected
        close(ec2x)
    finally:
        server.stop()


@pytest.mark.parametrize("holder", ["0.0.0.0", "::"])
def test_a_wildcard_udp_holder_of_the_tcp_port_number_is_stepped_around(holder):
    """Another program holds the number for UDP on a wildcard address (IPv4 0.0.0.0, or a
    dual-stack [::]): binding 127.0.0.1 is EADDRINUSE too; the pair moves to another port
    that echoes over TCP and UDP, the holder untouched."""
    from emulator.tools.demo_peer import _plain_echo_pair
    from tests.unit.tools.test_demo_peer_ports import _FirstCallOn, _peer
    family = socket.AF_INET6 if ":" in holder else socket.AF_INET
    for _ in range(50):
        held = socket.socket(family, socket.SOCK_DGRAM)
        if family == socket.AF_INET6:
            held.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        held.bind((holder, 0))
        held_port = held.getsockname()[1]
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", held_port))
                break
            except OSError:
                held.close()
    else:
        raise AssertionError("no port free for TCP and held for UDP")

    async def main():
        loop = _FirstCallOn(asyncio.get_running_loop(), held_port)
        server, udp, port = await _plain_echo_pair(loop, _peer(), "127.0.0.1")
        try:
            assert loop.ports[0] == held_port and port == loop.ports[-1] != held_port
            real = asyncio.get_running_loop()
            assert await real.run_in_executor(None, _tcp_echo, ("127.0.0.1", port), b"tcp") == b"tcp"
            assert await real.run_in_executor(None, _udp_echo, ("127.0.0.1", port), b"udp") == b"udp"
        finally:
            udp.close()
            server.close()
            await server.wait_closed()
    try:
        asyncio.run(main())
        assert held.getsockname()[1] == held_port
    finally:
        held.close()


@pytest.mark.parametrize("close_at_once", [False, True])
def test_transparent_big_upload_to_a_server_that_reads_late_loses_nothing(ec2x_strict, emulator, pki, close_at_once):
    """2 MB in transparent mode to a server that reads nothing for 1.5 s (TCP pushes back,
    the pty pauses, seal jobs wait behind the transport), then everything: all of it
    arrives exactly, before close_notify; close_at_once: "+++" and AT+QSSLCLOSE right after
    the host's last byte was taken, while records are still queued."""
    import time
    host, advance, port = ec2x_strict
    data = payload_of(2_000_000, 77)
    got = bytearray()

    def handler(conn):
        time.sleep(1.5)
        while chunk := conn.recv():
            got.extend(chunk)
    with TlsServer(pki.server, handler=handler) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        transparent(host)
        writer = threading.Thread(target=host.write, args=(data,), daemon=True)
        writer.start()
        if close_at_once:
            writer.join(15)
            assert not writer.is_alive()
            emulator.wait_received(port, host.written, 15)
        else:
            deadline = time.monotonic() + 15
            while len(got) < len(data) and time.monotonic() < deadline:
                time.sleep(0.02)
            writer.join(5)
        assert escape(host, advance) == OK
        mark = len(host.transcript)
        host.write(b"AT+QSSLCLOSE=0\r")
        deadline = time.monotonic() + 15
        while OK not in bytes(host.transcript[mark:]) and time.monotonic() < deadline:
            advance(0.1)
            host.quiet_for(0.02)
        assert bytes(host.transcript[mark:]) == OK
        conn = server.wait_done(timeout=15)
        assert conn.close_notify_received
        assert len(got) == len(data) and sha(got) == sha(data)


@pytest.mark.parametrize("sslversion, version", [(1, "TLSv1"), (2, "TLSv1.1")])
def test_seclevel_0_pinned_older_versions_take_the_deep_untrusted_chain(ec2x, net, sslversion, version):
    """sslversion 1 / 2 (TLS 1.0 / 1.1, a server allowing only that version) at seclevel 0:
    the 11-certificate untrusted chain connects and data flow (VERIFY_NONE is not a TLS 1.2
    thing)."""
    identity, _ = _odd("nine_intermediates_and_root")
    cfg(ec2x, "sslversion", 1, sslversion)
    cfg(ec2x, "seclevel", 1, 0)
    with TlsServer(identity, min_version=version, max_version=version) as server:
        net(server)
        assert open_ssl(ec2x, 1) == 0
        assert server.wait_handshake().version == version
        round_trip(ec2x, b"old version")
        close(ec2x)
