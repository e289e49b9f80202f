"""Old names, kept only for tests/tls_engine/test_boundary.py (in flight in another change);
delete this file once it imports ClientDriver / TlsServer from emulator.testing."""
from __future__ import annotations

import hashlib

from emulator.testing.engine_client import ClientDriver
from emulator.testing.peers import TlsServer

__all__ = ["ClientDriver", "TlsTestServer", "server_context", "sha256"]


def server_context(cert, **options) -> dict:
    """TlsServer options for `cert`, serving what the engine speaks (TLS 1.0-1.2)."""
    return {"cert": cert, "legacy": True, **options}


def TlsTestServer(options: dict) -> TlsServer:   # noqa: N802 - the old class name
    return TlsServer(**options)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
