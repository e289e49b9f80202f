"""A TLS sink in a process of its own (python -m bench.sink CERT KEY SIZE): prints its port,
then the suite negotiated, then the monotonic time at which SIZE bytes had arrived and how
many did.  In its own process it takes no CPU time from the host or the emulator's loop
beyond its own work, which a server thread inside the bench process would (the GIL)."""
from __future__ import annotations

import socket
import ssl
import sys
import time


def main(cert: str, key: str, size: int) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    conn, _ = listener.accept()
    tls = ctx.wrap_socket(conn, server_side=True)
    print(tls.cipher()[0], flush=True)
    got = 0
    while got < size:
        data = tls.recv(1 << 20)
        if not data:
            break
        got += len(data)
    print(time.monotonic(), got, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
