"""What an independent adversarial run found (issue 9's "kept fixed"): hostile servers
and host habits, each reproduced through the pty."""
from __future__ import annotations

import socket
import ssl
import struct
import threading
import time

import pytest



def raw_tls_server(pki, script):
    """A one-connection Python ssl server on 127.0.0.1:<port> running script(tls_socket)
    right after its handshake; returns (port, thread)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    pki.server.configure_cert(ctx)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        conn, _ = listener.accept()
        listener.close()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)   # nothing held back by Nagle
        tls = ctx.wrap_socket(conn, server_side=True)
        script(tls)
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread


def open_via(ec2x, emulator, port: int, name: str, client_id: int = 0, mode: int = 0) -> None:
    """Route `name`:443 to the server, activate PDP context 1, open the socket (OK)."""
    emulator.router.add_map(name, 443, "127.0.0.1", port)
    assert ec2x.at("AT+QIACT=1") == b"\r\nOK\r\n"
    assert ec2x.at(f'AT+QSSLOPEN=1,1,{client_id},"{name}",443,{mode}') == b"\r\nOK\r\n"


def rst(sock) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@pytest.mark.parametrize("mode", [0, 1])
def test_data_sent_with_the_handshake_then_rst_is_kept(ec2x, emulator, pki, mode):
    def script(tls):
        tls.sendall(b"bye")
        rst(tls)
    port, thread = raw_tls_server(pki, script)
    emulator.router.add_map("r.test", 443, "127.0.0.1", port)
    assert ec2x.at('AT+QIACT=1;+QSSLCFG="session_cache",1,0') == b"\r\nOK\r\n"
    assert ec2x.at(f'AT+QSSLOPEN=1,1,0,"r.test",443,{mode}') == b"\r\nOK\r\n"
    ec2x.seen(b"\r\n+QSSLOPEN: 0,0\r\n")
    if mode == 0:
        ec2x.seen(b'\r\n+QSSLURC: "recv",0\r\n')
        ec2x.seen(b'\r\n+QSSLURC: "closed",0\r\n')
        assert ec2x.at("AT+QSSLRECV=0,1500") == b"\r\n+QSSLRECV: 3\r\nbye\r\n\r\nOK\r\n"
    else:
        ec2x.seen(b'\r\n+QSSLURC: "recv",0,3\r\nbye')
        ec2x.seen(b'\r\n+QSSLURC: "closed",0\r\n')
    thread.join(5)


def test_close_notify_then_rst_is_reported_as_close_notify(ec2x, emulator, pki, caplog):
    import logging
    caplog.set_level(logging.DEBUG, logger="emulator.ssl")

    def script(tls):
        tls.sendall(b"data")
        tls.setblocking(False)
        try:
            tls.unwrap()                                  # close_notify ...
        except (ssl.SSLWantReadError, OSError):
            pass
        rst(tls)                                          # ... and at once an RST
    port, thread = raw_tls_server(pki, script)
    open_via(ec2x, emulator, port, "r.test")
    ec2x.seen(b"\r\n+QSSLOPEN: 0,0\r\n")
    ec2x.seen(b'\r\n+QSSLURC: "recv",0\r\n')
    ec2x.seen(b'\r\n+QSSLURC: "closed",0\r\n')
    assert ec2x.at("AT+QSSLRECV=0,1500") == b"\r\n+QSSLRECV: 4\r\ndata\r\n\r\nOK\r\n"
    thread.join(5)
    messages = [r.getMessage() for r in caplog.records]
    assert not [r for r in caplog.records if r.exc_info], messages
    assert not [m for m in messages if "unexpected" in m], messages


def test_a_pending_answer_is_not_given_to_the_next_host(emulator, open_modem, pki):
    """AT+QSSLCLOSE lingering when the host closes the port: the next host must not
    read that command's OK as the answer to its own first command."""
    from emulator.testing.host import Host
    host, port = open_modem("ec2x")
    port_no, thread = raw_tls_server(pki, lambda tls: time.sleep(1.5))   # ignores our FIN
    open_via(host, emulator, port_no, "s.test", client_id=1)
    host.seen(b"+QSSLOPEN: 1,0")
    host.write(b"AT+QSSLCFG=\"closetimemode\",1,1\r")
    host.read_until(b"\r\nOK\r\n")
    host.write(b"AT+QSSLCLOSE=1,1000\r")                  # lingers 1 s (ms mode)
    host.close()
    time.sleep(0.25)                                     # the hang-up is seen ...
    again = Host(port.path)                              # ... and a new host opens the port
    time.sleep(0.1)                                      # while the close still lingers
    try:
        assert again.at("AT+CSQ").startswith(b"\r\n+CSQ: ")        # not the old OK
        assert again.at("ATI").startswith(b"\r\nQuectel\r\n")
    finally:
        again.close()
    thread.join(5)


def test_ccklk_takes_the_whole_27_007_zone_range(ec2x):
    for zone in ("+96", "-96", "+00", "+32"):
        assert ec2x.at(f'AT+CCLK="25/01/01,00:00:00{zone}"') == b"\r\nOK\r\n"
        assert ec2x.at("AT+CCLK?").startswith(b'\r\n+CCLK: "25/01/01,00:00:0') and \
            zone.encode() + b'"' in ec2x.at("AT+CCLK?")


@pytest.mark.parametrize("line", ['AT+QSSLCFG="seclevel",1,+1', "AT+QSSLCLOSE=-0",
                                  'AT+QSSLCFG="seclevel",1,-0', 'AT+QSSLCFG="alpn",1,abc"',
                                  'AT+QSSLCFG="sni",1,1"'])
def test_signs_and_stray_quotes_are_errors(ec2x, line):
    assert ec2x.at(line) == b"\r\nERROR\r\n"
    assert ec2x.at('AT+QSSLCFG="alpn",1') == b'\r\n+QSSLCFG: "alpn",1,""\r\n\r\nOK\r\n'


def test_a_closed_socket_is_freed_without_the_cyclic_gc(ec2x, emulator, pki):
    """Each closed socket (and its TLS context, ~50 KiB of C memory) must go by reference
    counting, not wait for the cyclic garbage collector: `make soak`'s 2,000 open/close races
    saw the emulator's RSS grow when a reference cycle kept them (the shaped transport).
    (The service remembers the last socket of each id for AT+QSSLSTATE, so the first of
    two sockets on one id is the one that must be gone.)"""
    import gc
    import weakref
    servers = [raw_tls_server(pki, lambda tls: time.sleep(0.5)) for _ in range(2)]
    open_via(ec2x, emulator, servers[0][0], "g.test")
    ec2x.seen(b"\r\n+QSSLOPEN: 0,0\r\n")
    svc = emulator.run(lambda: emulator.emulator.ports[-1].modem.feature("ssl", None))
    first = emulator.run(lambda: weakref.ref(svc.sockets[0]))
    gc.disable()
    try:
        assert ec2x.at("AT+QSSLCLOSE=0,0") == b"\r\nOK\r\n"
        emulator.router.add_map("g.test", 443, "127.0.0.1", servers[1][0])
        assert ec2x.at('AT+QSSLOPEN=1,1,0,"g.test",443,0') == b"\r\nOK\r\n"
        ec2x.seen(b"\r\n+QSSLOPEN: 0,0\r\n")
        assert ec2x.at("AT+QSSLCLOSE=0,0") == b"\r\nOK\r\n"
        assert emulator.run(first) is None, "the first socket outlived its close"
    finally:
        gc.enable()
    for _, thread in servers:
        thread.join(5)
