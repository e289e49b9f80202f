"""MemoryTlsServer: an OpenSSL server (Python's ssl) over memory BIOs, for sans-IO tests of
the TLS engine: the client's bytes in, the server's answer out, no socket, no thread."""
from __future__ import annotations

import ssl


class MemoryTlsServer:
    """One server-side handshake in memory.

    minimum / maximum: the versions it takes (ssl.TLSVersion; TLS 1.2 at most by default);
    ciphers: an OpenSSL cipher string (e.g. "DEFAULT:@SECLEVEL=0" for TLS 1.0/1.1);
    client_ca: PEM text of the CA a client certificate may be asked of (CERT_OPTIONAL).
    After take(): done (the handshake completed), received (every byte the client sent),
    exception (the first ssl.SSLError) and error (its reason, e.g. "TLSV1_ALERT_ACCESS_DENIED")."""

    def __init__(self, leaf, *, minimum: ssl.TLSVersion | None = None,
                 maximum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2, ciphers: str | None = None,
                 client_ca: str | None = None) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if ciphers:
            ctx.set_ciphers(ciphers)
        if minimum is not None:
            ctx.minimum_version = minimum
        ctx.maximum_version = maximum
        ctx.load_cert_chain(leaf.chain_path, leaf.key_path)
        if client_ca is not None:
            ctx.verify_mode = ssl.CERT_OPTIONAL
            ctx.load_verify_locations(cadata=client_ca)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.done = False
        self.received = b""
        self.exception: ssl.SSLError | None = None
        self.error: str | None = None

    def take(self, data: bytes) -> bytes:
        """Bytes from the client in; the server's answer out (its first error kept)."""
        self.received += data
        self.incoming.write(data)
        try:
            self.obj.do_handshake()
            self.done = True
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError as exc:
            if self.exception is None:
                self.exception, self.error = exc, exc.reason
        return self.outgoing.read()
