"""Session cache and the per-connection resumption glue (through tls_engine.native).

python-mbedtls cannot resume sessions (issue #48); native.NativeSsl copies the
mbedtls_ssl_session out after a handshake and back in before the next one. Without
native, connections simply do full handshakes and a note says why.
"""
from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Hashable

# TlsSettings fields that say nothing about what a session was verified against.
_NOT_FINGERPRINTED = frozenset({"clock", "keylog", "ca_label", "monotonic"})


def settings_fingerprint(settings) -> bytes:
    """SHA-256 over every TlsSettings field that shapes or verifies a session: the CA,
    client certificate and key BYTES (not their file names), PSK, relax flags, versions,
    suites, ... A resumed session skips certificate checks, so it may only be offered
    again under exactly the settings it was first verified under."""
    digest = hashlib.sha256()
    for f in dataclasses.fields(settings):
        if f.name not in _NOT_FINGERPRINTED:
            digest.update(f"{f.name}={getattr(settings, f.name)!r};".encode())
    return digest.digest()


class SessionCache:
    """Saved TLS sessions (opaque native objects) keyed by e.g. (ssl_ctx_id, host, port).

    Each entry also remembers the fingerprint of the settings it was saved under; get()
    with another fingerprint drops the entry and answers None (a replaced CA file, a new
    client key, another relax flag: never resumed, whatever the key says)."""

    def __init__(self) -> None:
        self._entries: dict[Hashable, tuple[bytes | None, object]] = {}

    def get(self, key: Hashable, fingerprint: bytes | None = None) -> object | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        saved_under, saved = entry
        if fingerprint is not None and saved_under != fingerprint:
            del self._entries[key]
            return None
        return saved

    def put(self, key: Hashable, saved: object, fingerprint: bytes | None = None) -> None:
        self._entries[key] = (fingerprint, saved)

    def discard(self, key: Hashable) -> None:
        self._entries.pop(key, None)

    def discard_matching(self, predicate: Callable[[Hashable], bool]) -> None:
        """Drop entries whose key satisfies predicate, e.g. every key of an SSL context
        whose configuration changed: a resumed session skips certificate checks."""
        for key in [k for k in self._entries if predicate(k)]:
            del self._entries[key]

    def clear(self) -> None:
        self._entries.clear()

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)


class Resumption:
    """One connection's use of the cache. Every native problem degrades to a note."""

    def __init__(self, enabled: bool, cache: SessionCache | None, key: Hashable,
                 notes: list[str], fingerprint: bytes | None = None) -> None:
        self.enabled = bool(enabled and cache is not None and key is not None)
        self.cache = cache
        self.key = key
        self.notes = notes
        self.fingerprint = fingerprint      # settings_fingerprint() of this connection
        self._ssl = None
        self._offered = None                # the session this connection offered (or saved)

    def attach(self, buffer) -> None:
        """Before the handshake: offer the cached session, if any."""
        if not self.enabled:
            return
        from . import native  # lazy: the first import runs native's self-check

        if not native.available():
            self.notes.append("tls_engine.native unavailable: no session resumption")
            return
        try:
            self._ssl = native.NativeSsl(buffer)
            saved = self.cache.get(self.key, self.fingerprint)
            if saved is not None:
                self._ssl.load_session(saved)
                self._offered = saved
        except Exception as exc:
            self.cache.discard(self.key)
            self.notes.append(f"session not resumed: {exc}")

    def reused(self) -> bool:
        if self._ssl is None:
            return False
        try:
            return bool(self._ssl.session_reused())
        except Exception as exc:
            self.notes.append(f"cannot tell whether the session was resumed: {exc}")
            return False

    def save(self) -> None:
        if self._ssl is None:
            return
        try:
            self._offered = self._ssl.save_session()      # this connection's session now
            self.cache.put(self.key, self._offered, self.fingerprint)
        except Exception as exc:
            self.notes.append(f"session not saved for resumption: {exc}")

    def forget(self) -> None:
        """After a failure: never offer this session again -- the one this connection offered
        (or saved), not a newer one another connection saved under the key meanwhile."""
        if self.enabled and self._offered is not None and self.cache.get(self.key) is self._offered:
            self.cache.discard(self.key)
