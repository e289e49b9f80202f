"""Functional part of tls_engine.native's self-check (run by _init in __init__.py,
after the structural checks of layout.self_check).

An in-memory TLS 1.2 PSK handshake between a python-mbedtls client and server (no
certificates, no sockets, ~2 ms) with the key-export callback installed on the client.
It proves, on this very build, that: the callback signature is right (it fires with a
32-byte client random and 48-byte master secret), NativeSsl finds the ssl context, and
the mbedtls_ssl_session layout is right (the master secret copied out by
mbedtls_ssl_get_session equals the exported one; the ciphersuite field is the
negotiated suite; id_len <= 32).
"""
from __future__ import annotations

from .layout import LayoutError

_PSK_SUITE = "TLS-PSK-WITH-AES-128-GCM-SHA256"
_PSK_SUITE_ID = 0x00A8


def pump_handshake(tls, client, server, max_rounds: int = 50) -> None:
    """Drive two TLSWrappedBuffers to HANDSHAKE_OVER by shuttling bytes in memory."""
    over = tls.HandshakeStep.HANDSHAKE_OVER
    for _ in range(max_rounds):
        progressed = False
        for me, peer in ((client, server), (server, client)):
            while me._handshake_state is not over:
                try:
                    me.do_handshake()
                except tls.WantReadError:
                    break
                except tls.WantWriteError:
                    pass
                progressed = True
                _move(me, peer)
            _move(me, peer)
        if client._handshake_state is over and server._handshake_state is over:
            return
        if not progressed:
            break
    raise LayoutError(
        f"in-memory handshake stuck: client {client._handshake_state}, server {server._handshake_state}"
    )


def _move(src, dst) -> None:
    while True:
        data = src.peek_outgoing(16384)
        if not data:
            return
        src.consume_outgoing(len(data))
        dst.receive_from_network(data)


def functional_check(tls) -> None:
    from .handles import NativeConf, NativeSsl

    psk = bytes(range(16))
    common = dict(
        highest_supported_version=tls.TLSVersion.TLSv1_2,
        lowest_supported_version=tls.TLSVersion.TLSv1_2,
        ciphers=(_PSK_SUITE,),
    )
    cctx = tls.ClientContext(tls.TLSConfiguration(pre_shared_key=("selfcheck", psk), **common))
    sctx = tls.ServerContext(tls.TLSConfiguration(pre_shared_key_store={"selfcheck": psk}, **common))
    lines: list[str] = []
    NativeConf(cctx).set_keylog(lines.append)
    client, server = cctx.wrap_buffers(None), sctx.wrap_buffers()
    ssl = NativeSsl(client)
    pump_handshake(tls, client, server)
    if len(lines) != 1:
        raise LayoutError(f"key-export callback fired {len(lines)} times, expected 1")
    parts = lines[0].split(" ")
    if len(parts) != 3 or len(parts[1]) != 64 or len(parts[2]) != 96:
        raise LayoutError(f"malformed key-log line {lines[0]!r}")
    session = ssl.save_session()
    if session.ciphersuite != _PSK_SUITE_ID:
        raise LayoutError(f"session->ciphersuite is 0x{session.ciphersuite:04X}, expected 0x{_PSK_SUITE_ID:04X}")
    if session.master_secret.hex() != parts[2]:
        raise LayoutError("session->master differs from the exported master secret")
    if len(session.session_id) > 32:
        raise LayoutError("session->id_len implausible")
    if ssl.session_reused():
        raise LayoutError("session_reused() true on a full handshake")
    session.free()
