"""PlainSession: the sans-IO "session" of a plain TCP or UDP socket.

It has the interface of tls_engine.TlsClientSession that SslSocket drives (start,
receive, outgoing, events, send, close, next_timeout, handle_timeout, state,
settings.dtls), so the one socket layer (emulator/sockets/ssl_socket.py: states,
deliveries, flow control, faults, counters, trace) carries AT+QIOPEN sockets too:

* start(): nothing to negotiate, HandshakeComplete at once (version "TCP"/"UDP");
* receive(data): the bytes as AppData -- for a datagram socket one event per
  datagram (its boundary is kept); receive(b"") on a stream is the peer's end
  (PeerClosed), as for TLS without close_notify;
* send(data): the bytes go out unchanged; a datagram socket sends one datagram per
  send() (one AT+QISEND = one datagram);
* close(): nothing to say to the peer (the socket sends the FIN);
* take_job() / settle() / unsealed() / seal_all(): no seal jobs (NoSealJobs).
"""
from __future__ import annotations

from dataclasses import dataclass

from tls_engine import AppData, HandshakeComplete, PeerClosed


@dataclass(frozen=True)
class PlainSettings:
    """What SslSocket reads of a session's settings: dtls = datagrams (UDP); incoming =
    a connection a TCP LISTENER accepted (the trace replay's sessions tell them apart)."""
    dtls: bool = False
    incoming: bool = False


class NoSealJobs:
    """The seal-job part of the session interface (tls_engine/sealing.py) for a session
    that encrypts nothing (plain sockets, the trace replay's stand-ins): never a job."""
    offload = False

    def take_job(self):
        return None

    def settle(self, job=None) -> None:
        pass

    def unsealed(self) -> int:
        return 0

    def seal_all(self) -> None:
        pass


class PlainSession(NoSealJobs):
    def __init__(self, settings: PlainSettings, cache=None, cache_key=None) -> None:
        self.settings = settings
        self.state = "idle"
        self.notes: list[str] = []
        self._events: list[object] = []
        self._out: list[bytes] = []

    @property
    def datagram(self) -> bool:
        return self.settings.dtls

    def start(self) -> None:
        if self.state != "idle":
            raise RuntimeError(f"start() called in state {self.state!r}")
        self.state = "established"
        self._events.append(HandshakeComplete(version="UDP" if self.datagram else "TCP", cipher_id=0,
                                              cipher_name="", alpn=None, resumed=False))

    def receive(self, data: bytes) -> None:
        if self.state != "established":
            return
        if data:
            self._events.append(AppData(bytes(data)))
        elif not self.datagram:           # EOF of the stream (an empty datagram: nothing to read)
            self.state = "closed"
            self._events.append(PeerClosed())

    def send(self, data: bytes) -> None:
        if self.state != "established":
            raise RuntimeError(f"send() called in state {self.state!r}")
        if self.datagram:
            self._out.append(bytes(data))
        elif data:
            if self._out:
                self._out[-1] += bytes(data)
            else:
                self._out.append(bytes(data))

    def close(self) -> None:
        if self.state != "failed":
            self.state = "closed"

    def outgoing(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def events(self) -> list[object]:
        out, self._events = self._events, []
        return out

    def next_timeout(self) -> float | None:
        return None

    def handle_timeout(self) -> None:
        pass
