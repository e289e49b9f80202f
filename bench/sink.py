"""TLS servers in a process of their own for make bench:

    python -m bench.sink CERT KEY MODE [MODE ...]

One listener per MODE; prints each listener's port (one line each, in order), then, for
each connection, what its mode reports.  Every listener speaks TLS 1.2 only with
ECDHE-RSA-AES128-GCM-SHA256 (RSA-2048 from CERT/KEY), no session tickets, so every client
of a benchmark negotiates the same thing and none resumes.

Modes:
  discard        read and drop until EOF (handshake benchmarks, the scale test's sockets)
  count:SIZE     after SIZE bytes, print "<suite> <monotonic time> <bytes>" (the time the
                 last byte arrived; CLOCK_MONOTONIC is system-wide, so the host process
                 compares it with its own start time)
  source:SIZE    send SIZE bytes, then read and drop until EOF

In its own process it takes no CPU time from the host or the emulator's loop beyond its
own work, which a server thread inside the bench process would (the GIL).  A thread per
connection: OpenSSL releases the GIL in handshakes, reads and writes.
"""
from __future__ import annotations

import os
import socket
import ssl
import sys
import threading
import time

SUITE = "ECDHE-RSA-AES128-GCM-SHA256"


def context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(SUITE)
    ctx.options |= ssl.OP_NO_TICKET
    return ctx


def serve(conn: socket.socket, ctx: ssl.SSLContext, mode: str) -> None:
    try:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tls = ctx.wrap_socket(conn, server_side=True)
        kind, _, size = mode.partition(":")
        if kind == "source":
            chunk = os.urandom(1 << 16)
            left = int(size)
            while left:
                left -= tls.send(chunk[:left])
        got = 0
        target = int(size) if kind == "count" else -1
        while True:
            data = tls.recv(1 << 20)
            if not data:
                break
            got += len(data)
            if got == target:
                print(tls.cipher()[0], time.monotonic(), got, flush=True)
    except (OSError, ssl.SSLError, ValueError):
        pass
    finally:
        conn.close()


def listen(listener: socket.socket, ctx: ssl.SSLContext, mode: str) -> None:
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn, ctx, mode), daemon=True).start()


def main(cert: str, key: str, modes: list[str]) -> None:
    threading.stack_size(256 << 10)         # 1,200 connections in the scale test
    ctx = context(cert, key)
    listeners = [socket.create_server(("127.0.0.1", 0), backlog=2048) for _ in modes]
    for listener in listeners:
        print(listener.getsockname()[1], flush=True)
    for listener, mode in zip(listeners, modes):
        threading.Thread(target=listen, args=(listener, ctx, mode), daemon=True).start()
    threading.Event().wait()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
