"""Functional parts of tls_engine.native's self-check (run by _init in __init__.py).

wrapper_check (first, needs no pinned version): the wrapper's private Python names
that wrapper.py uses, proven on an in-memory TLS 1.2 PSK handshake: the input ring's
free space follows what is fed, the output ring's length is exactly what
peek_outgoing() returns, the handshake state reaches HANDSHAKE_OVER when (and only
when) the handshake is done, and the suite id <-> name registry answers.

functional_check (after the structural checks of layout.self_check): an in-memory
TLS 1.2 PSK handshake between a python-mbedtls client and server (no certificates, no
sockets, ~2 ms) with the key-export callback installed on the client. It proves, on
this very build, that: the callback signature is right (it fires with a 32-byte client
random and 48-byte master secret), NativeSsl finds the ssl context, and the
mbedtls_ssl_session layout is right (the master secret copied out by
mbedtls_ssl_get_session equals the exported one; the ciphersuite field is the
negotiated suite; id_len <= 32), and that NativeSsl.write_nogil called from another
thread makes records the server decrypts to the bytes written.
"""
from __future__ import annotations

from . import wrapper
from .layout import LayoutError

_PSK_SUITE = "TLS-PSK-WITH-AES-128-GCM-SHA256"
_PSK_SUITE_ID = 0x00A8
_MAX_RECORD = 5 + 16384 + 2048  # the input ring must hold one record of any size


def pump_handshake(tls, client, server, max_rounds: int = 50) -> None:
    """Drive two TLSWrappedBuffers to HANDSHAKE_OVER by shuttling bytes in memory
    (reads the wrapper's private handshake state: wrapper_check proves it first)."""
    over = wrapper.handshake_over_private
    for _ in range(max_rounds):
        progressed = False
        for me, peer in ((client, server), (server, client)):
            while not over(me):
                try:
                    me.do_handshake()
                except tls.WantReadError:
                    break
                except tls.WantWriteError:
                    pass
                progressed = True
                _move(me, peer)
            _move(me, peer)
        if over(client) and over(server):
            return
        if not progressed:
            break
    raise LayoutError(
        f"in-memory handshake stuck: client {getattr(client, wrapper.HANDSHAKE_STATE)}, "
        f"server {getattr(server, wrapper.HANDSHAKE_STATE)}"
    )


def _move(src, dst) -> None:
    while True:
        data = src.peek_outgoing(16384)
        if not data:
            return
        src.consume_outgoing(len(data))
        dst.receive_from_network(data)


def _psk_contexts(tls):
    psk = bytes(range(16))
    common = dict(
        highest_supported_version=tls.TLSVersion.TLSv1_2,
        lowest_supported_version=tls.TLSVersion.TLSv1_2,
        ciphers=(_PSK_SUITE,),
    )
    cctx = tls.ClientContext(tls.TLSConfiguration(pre_shared_key=("selfcheck", psk), **common))
    sctx = tls.ServerContext(tls.TLSConfiguration(pre_shared_key_store={"selfcheck": psk}, **common))
    return cctx, sctx


def wrapper_check(tls) -> None:
    """Prove the private names of wrapper.py on this wheel; raises LayoutError (or
    AttributeError/TypeError from a missing name) when one does not hold."""
    name_of, id_of = wrapper.suite_registry()
    if name_of(_PSK_SUITE_ID) != _PSK_SUITE or int(id_of(_PSK_SUITE)) != _PSK_SUITE_ID:
        raise LayoutError(f"suite registry: 0x{_PSK_SUITE_ID:04X} <-> {name_of(_PSK_SUITE_ID)!r}, "
                          f"{_PSK_SUITE} <-> {id_of(_PSK_SUITE)!r}")
    if name_of(0x0000) != "unknown" or int(id_of("no-such-suite")) != 0:
        raise LayoutError("suite registry does not answer 'unknown' / 0 for unknown suites")
    cctx, sctx = _psk_contexts(tls)
    client, server = cctx.wrap_buffers(None), sctx.wrap_buffers()
    room = wrapper.input_free_private(server)
    if room < _MAX_RECORD or wrapper.output_pending_private(client) != 0:
        raise LayoutError(f"fresh buffer: input room {room}, output "
                          f"{wrapper.output_pending_private(client)}")
    if wrapper.handshake_over_private(client):
        raise LayoutError("handshake state is HANDSHAKE_OVER before any handshake")
    for _ in range(3):  # HELLO_REQUEST -> CLIENT_HELLO -> ClientHello written
        try:
            client.do_handshake()
        except (tls.WantReadError, tls.WantWriteError):
            pass
        if wrapper.output_pending_private(client):
            break
    pending = wrapper.output_pending_private(client)
    hello = client.peek_outgoing(pending + 1)
    if not pending or len(hello) != pending:
        raise LayoutError(f"output ring length {pending}, peek_outgoing gave {len(hello)} bytes")
    client.consume_outgoing(pending)
    server.receive_from_network(hello)
    if wrapper.input_free_private(server) != room - pending:
        raise LayoutError(f"input ring room {wrapper.input_free_private(server)} after feeding "
                          f"{pending} bytes, expected {room - pending}")
    pump_handshake(tls, client, server)
    if client.cipher() != _PSK_SUITE or wrapper.output_pending_private(client) != 0:
        raise LayoutError(f"after the handshake: suite {client.cipher()!r}, output "
                          f"{wrapper.output_pending_private(client)}")


def functional_check(tls) -> None:
    from .handles import NativeConf, NativeSsl

    cctx, sctx = _psk_contexts(tls)
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
    _nogil_write_check(tls, client, server, ssl)


def _nogil_write_check(tls, client, server, ssl) -> None:
    """NativeSsl.write_nogil (the GIL released in the C call, as on the offload worker)
    makes records the peer decrypts to the same bytes: two records, drained between them.
    Called here, on the importing thread: a ctypes call releases the GIL on any thread,
    and Mbed TLS keeps no per-thread state.  No thread is started for it -- a process that
    has ever had a second thread pays glibc's arena lock on every calloc, and Mbed TLS's
    bignum code makes ~7,800 of them per ECDHE handshake (~8% slower opens, measured;
    README "Benchmarks")."""
    payload = bytes(range(256)) * 80          # 20 KiB: a full record and a part
    records: list[bytes] = []
    taken = 0
    while taken < len(payload):
        rc = ssl.write_nogil(payload, taken, min(16384, len(payload) - taken))
        if rc <= 0:
            raise LayoutError(f"write_nogil: -0x{-rc:04X}")
        taken += rc
        records.append(wrapper.take_outgoing(client))
    server.receive_from_network(b"".join(records))
    got = bytearray()
    scratch = bytearray(16384)
    while True:
        try:
            n = server.readinto(scratch, len(scratch))
        except tls.WantReadError:
            break
        if n <= 0:
            break
        got += scratch[:n]
    if bytes(got) != payload:
        raise LayoutError(f"write_nogil: the peer read {len(got)} bytes, not the {len(payload)} "
                          f"written" if len(got) != len(payload) else "write_nogil: the peer read "
                          "other bytes than were written")
