"""Issue 9, socket side: every open and close ends in exactly one answer (names the IDNA
step rejects, exceptions inside the open or close path), no TCP connection outlives its
socket (open + close at once), AT+QSSLCLOSE after a peer close, the log naming how the
peer closed, and an unrouted IP literal under --offline failing as a connect error."""
from __future__ import annotations

import asyncio
import logging
import random
import re
import selectors
import socket
import threading
import time

import pytest

import tls_engine
from emulator.io.network import NetworkError, Router
from emulator.testing.peers import TlsServer, default_pki

OK = b"\r\nOK\r\n"


def ec2x_opened(host, client_id: int, timeout: float = 5) -> int:
    line = host.seen(re.compile(rb"\r\n\+QSSLOPEN: %d,(-?\d+)\r\n" % client_id), timeout)
    return int(re.search(rb"(-?\d+)\r\n$", line).group(1))


def ml302_attach(host) -> None:
    assert host.at('AT+CGDCONT=1,"IP","CMNET"') == OK
    assert host.at("AT+CGACT=1,1").endswith(OK)


def traceback_records(caplog, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records
            if r.name.startswith("emulator") and r.exc_info and text in r.getMessage()]


# -- 1. names the resolver's IDNA step rejects: a DNS failure, no network ---------------------
BAD_NAMES = ["a..b", ".", "a" * 64 + ".example", "www.iottest.work.."]


@pytest.fixture
def online(emulator, monkeypatch):
    """The emulator without --offline; every getaddrinfo call is recorded (and still done)."""
    asked: list[str] = []
    real = socket.getaddrinfo

    def spy(host, *args, **kwargs):
        asked.append(host)
        return real(host, *args, **kwargs)
    monkeypatch.setattr(socket, "getaddrinfo", spy)
    emulator.router.offline = False
    return asked


@pytest.mark.parametrize("offline", [False, True], ids=["online", "offline"])
@pytest.mark.parametrize("name", BAD_NAMES + [".".join(["a" * 63] * 4)])   # 255 characters
def test_router_refuses_names_no_dns_query_can_carry(name, offline):
    """Offline too the reason names the bad name, not "not routed" (the log says what is
    wrong with the host's name)."""
    async def scenario():
        asked = []

        async def getaddrinfo(host, *args, **kwargs):
            asked.append(host)
            raise AssertionError("the resolver must not be asked")
        asyncio.get_running_loop().getaddrinfo = getaddrinfo
        with pytest.raises(NetworkError) as info:
            await Router(offline=offline).resolve(name, 443)
        assert info.value.kind == "dns" and "not a valid host name" in info.value.reason
        assert asked == []
    asyncio.run(scenario())


@pytest.mark.parametrize("name", BAD_NAMES)
def test_ec2x_idna_rejected_name_is_dns_error_565(ec2x, online, name):
    assert ec2x.at("AT+QIACT=1") == OK
    assert ec2x.at(f'AT+QSSLOPEN=1,0,0,"{name}",443') == OK
    assert ec2x_opened(ec2x, 0) == 565
    assert ec2x.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 565,DNS parse failed\r\n\r\nOK\r\n"
    assert ec2x.at("AT+QSSLSTATE") == OK                  # the id is free again
    assert online == []                                   # refused before any resolver call


@pytest.mark.parametrize("name", BAD_NAMES[:2])
def test_ml302_idna_rejected_name_is_minus_1(ml302, online, name):
    ml302_attach(ml302)
    assert ml302.at(f'AT+QSSLOPEN=0,0,"{name}",443,0,10') == OK
    assert ml302.seen(b"\r\n+QSSLOPEN: 0,-1\r\n", 5)     # well before its own 10 s timeout
    assert b"CONNECTING" not in ml302.at("AT+QSSLSTATE")
    assert online == []


# -- 2. an exception anywhere in the open / close path still ends in one answer ----------------
def _boom(*args, **kwargs):
    raise UnicodeEncodeError("ascii", "h2,\xe9", 3, 4, "ordinal not in range(128)")


@pytest.fixture
def echo_server(emulator):
    with TlsServer(default_pki().server) as server:
        emulator.router.add_map("echo.example", 443, "127.0.0.1", server.port)
        emulator.router.add_map("www.iottest.work", 443, "127.0.0.1", server.port)
        yield server


@pytest.mark.parametrize("where", ["start", "init"])
def test_ec2x_exception_in_session_setup_answers_552(ec2x, echo_server, monkeypatch, caplog, where):
    caplog.set_level(logging.INFO, logger="emulator")
    monkeypatch.setattr(tls_engine.TlsClientSession, "start" if where == "start" else "__init__", _boom)
    assert ec2x.at("AT+QIACT=1") == OK
    assert ec2x.at('AT+QSSLOPEN=1,0,0,"echo.example",443') == OK
    assert ec2x_opened(ec2x, 0) == 552
    assert ec2x.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 552,invalid parameter\r\n\r\nOK\r\n"
    assert ec2x.at("AT+QSSLSTATE") == OK
    assert len(traceback_records(caplog, "SSL open 0")) == 1
    echo_server.wait_for(lambda: echo_server.connections and echo_server.conn.closed, 5,
                         "the failed socket's TCP close")
    monkeypatch.undo()
    assert ec2x.at('AT+QSSLOPEN=1,0,0,"echo.example",443') == OK     # the id works again
    assert ec2x_opened(ec2x, 0) == 0


@pytest.mark.parametrize("where", ["connect", "handshake"])
def test_ec2x_exception_while_connecting_answers_566(ec2x, echo_server, monkeypatch, caplog, where):
    import emulator.sockets.ssl_socket as ssl_socket

    async def broken_connect(*args, **kwargs):
        raise RuntimeError("something nobody expected")

    def broken_receive(self, data):
        raise RuntimeError("something nobody expected")
    if where == "connect":
        monkeypatch.setattr(ssl_socket, "open_tcp", broken_connect)
    else:                                 # the server's first flight makes the engine raise
        monkeypatch.setattr(tls_engine.TlsClientSession, "receive", broken_receive)
    caplog.set_level(logging.INFO, logger="emulator")
    assert ec2x.at("AT+QIACT=1") == OK
    assert ec2x.at('AT+QSSLOPEN=1,0,0,"echo.example",443') == OK
    assert ec2x_opened(ec2x, 0) == 566
    assert len(traceback_records(caplog, "SSL open 0")) == 1
    assert ec2x.at("AT") == OK


def test_ml302_exception_in_session_setup_answers_minus_1(ml302, echo_server, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="emulator")
    monkeypatch.setattr(tls_engine.TlsClientSession, "start", _boom)
    ml302_attach(ml302)
    assert ml302.at('AT+QSSLOPEN=0,0,"www.iottest.work",443,0,10') == OK
    assert ml302.seen(b"\r\n+QSSLOPEN: 0,-1\r\n", 5)
    assert len(traceback_records(caplog, "SSL open 0")) == 1
    monkeypatch.undo()
    assert ml302.at('AT+QSSLOPEN=0,0,"www.iottest.work",443,0,10') == OK
    assert ml302.seen(b"\r\n+QSSLOPEN: 0,0\r\n", 5)


@pytest.mark.parametrize("profile", ["ec2x", "ml302"])
def test_exception_in_close_still_answers_and_drops_the_connection(open_modem, echo_server,
                                                                  monkeypatch, caplog, profile):
    host, _ = open_modem(profile)
    caplog.set_level(logging.INFO, logger="emulator")
    if profile == "ec2x":
        assert host.at("AT+QIACT=1") == OK
        assert host.at('AT+QSSLOPEN=1,0,0,"echo.example",443') == OK
        assert ec2x_opened(host, 0) == 0
    else:
        ml302_attach(host)
        assert host.at('AT+QSSLOPEN=0,0,"www.iottest.work",443,0') == OK
        assert host.seen(b"\r\n+QSSLOPEN: 0,0\r\n", 5)
    conn = echo_server.wait_handshake()

    def broken_close(self):
        raise RuntimeError("close failed")
    monkeypatch.setattr(tls_engine.TlsClientSession, "close", broken_close)
    assert host.at("AT+QSSLCLOSE=0", timeout=5) == OK
    if profile == "ml302":
        assert host.read_until(b"\r\n0,CLOSE OK\r\n", 5) == b"\r\n0,CLOSE OK\r\n"
    echo_server.wait_for(lambda: conn.closed, 5, "the TCP close")
    assert len(traceback_records(caplog, "SSL socket 0")) == 1
    assert b"CONNECTED" not in host.at("AT+QSSLSTATE")
    assert host.at("AT") == OK


# -- 3. open then close at once: no TCP connection outlives its socket -----------------------
class TcpCounter:
    """Accepts on loopback, reads and discards; counts connections the client has not closed."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.listener, selectors.EVENT_READ)
        while not self._stop:
            for key, _ in sel.select(0.05):
                if key.fileobj is self.listener:
                    try:
                        conn, _ = self.listener.accept()
                    except BlockingIOError:
                        continue
                    conn.setblocking(False)
                    sel.register(conn, selectors.EVENT_READ)
                    with self._lock:
                        self.accepted += 1
                        self.open.add(conn)
                    continue
                conn = key.fileobj
                try:
                    data = conn.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(conn)
                    conn.close()
                    with self._lock:
                        self.open.discard(conn)
        sel.close()

    def still_open(self) -> int:
        with self._lock:
            return len(self.open)

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)
        self.listener.close()
        for conn in list(self.open):
            conn.close()


def test_open_then_close_at_once_leaks_no_tcp_connection(ec2x, emulator):
    counter = TcpCounter()
    try:
        emulator.router.add_map("race.example", 443, "127.0.0.1", counter.port)
        assert ec2x.at("AT+QIACT=1") == OK
        pause = random.Random(9)
        for i in range(200):
            if i % 10 == 0:      # the same line: the close runs before the connect is under way
                assert ec2x.at('AT+QSSLOPEN=1,0,0,"race.example",443;+QSSLCLOSE=0') == OK
                continue
            # the next line 0-1 ms later: the close lands anywhere in the connect (~15% of
            # these leaked a connection before the fix)
            ec2x.write(b'AT+QSSLOPEN=1,0,0,"race.example",443\r')
            time.sleep(pause.random() / 1000)
            ec2x.write(b"AT+QSSLCLOSE=0\r")
            assert ec2x.read_until(OK) == OK and ec2x.read_until(OK) == OK
        assert ec2x.at("AT+QSSLSTATE") == OK
        deadline = time.monotonic() + 1.0
        while counter.still_open() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert counter.accepted > 0
        assert counter.still_open() == 0, f"{counter.still_open()} of {counter.accepted} still open"
        assert b"+QSSLOPEN:" not in ec2x.transcript
    finally:
        counter.close()


def test_connection_completing_after_the_close_is_dropped(ec2x, emulator, monkeypatch):
    """The race made deterministic: the connect goes on although the open was cancelled
    (as asyncio's wait_for lets it when the cancel and the connect's completion meet)."""
    import emulator.sockets.ssl_socket as ssl_socket
    real_open_tcp = ssl_socket.open_tcp
    connecting = threading.Event()

    async def open_tcp_ignoring_the_cancel(*args, **kwargs):
        connecting.set()
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            pass
        return await real_open_tcp(*args, **kwargs)
    monkeypatch.setattr(ssl_socket, "open_tcp", open_tcp_ignoring_the_cancel)
    counter = TcpCounter()
    try:
        emulator.router.add_map("race.example", 443, "127.0.0.1", counter.port)
        assert ec2x.at("AT+QIACT=1") == OK
        assert ec2x.at('AT+QSSLOPEN=1,0,0,"race.example",443') == OK
        assert connecting.wait(5)
        assert ec2x.at("AT+QSSLCLOSE=0") == OK
        deadline = time.monotonic() + 2.0
        while (counter.accepted == 0 or counter.still_open()) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert counter.accepted == 1 and counter.still_open() == 0
        assert b"+QSSLOPEN:" not in ec2x.quiet_for(0.2)
    finally:
        counter.close()


# -- 4. AT+QSSLCLOSE after a peer close; the log says how the peer closed ------------------------
PEER_CLOSE = {   # how the server ends the connection: TlsConnection.close() arguments
    "close_notify": dict(close_notify=True, fin=False),   # TCP left open for the client to close
    "fin": dict(close_notify=False),                      # a bare TCP FIN, no close_notify
    "rst": dict(reset=True),                              # SO_LINGER 0: a reset
}


@pytest.mark.parametrize("how, logged", [
    ("close_notify", "peer sent close_notify"),
    ("fin", "peer closed TCP without close_notify (FIN)"),
    ("rst", "connection reset by peer (RST)"),
])
def test_peer_close_kinds_logged_and_close_after_peer_close(ec2x, emulator, caplog, how, logged):
    caplog.set_level(logging.INFO, logger="emulator.ssl")
    with TlsServer(default_pki().server, mode="sink") as peer:
        emulator.router.add_map("peer.example", 443, "127.0.0.1", peer.port)
        assert ec2x.at("AT+QIACT=1") == OK
        assert ec2x.at('AT+QSSLOPEN=1,0,0,"peer.example",443') == OK
        assert ec2x_opened(ec2x, 0) == 0
        conn = peer.wait_handshake()
        assert conn.handshake_done
        conn.close(**PEER_CLOSE[how])
        ec2x.seen(b'\r\n+QSSLURC: "closed",0\r\n', 5)
        messages = [r.getMessage() for r in caplog.records if r.name == "emulator.ssl"]
        assert f"SSL socket 0: {logged}" in messages, messages
        others = {"peer sent close_notify", "peer closed TCP without close_notify (FIN)",
                  "connection reset by peer (RST)"} - {logged}
        assert not [m for m in messages if any(o in m for o in others)], messages
        if how == "close_notify":
            # The session is over: the emulator's FIN follows at once, the TCP connection
            # is not left open until the host's AT+QSSLCLOSE.
            peer.wait_for(lambda: conn.closed, 3, "the client's FIN (the server never saw it)")
        assert ec2x.at("AT+QSSLCLOSE=0", timeout=5) == OK
        peer.wait_for(lambda: conn.closed, 3, "the client's close (the server never saw it)")
        if how != "rst":
            assert conn.error is None, conn.error
            assert conn.client_eof
        assert ec2x.at("AT+QSSLSTATE") == OK


# -- 5. --offline: an unrouted IP literal is a connect failure, a name a DNS failure ----------
@pytest.mark.parametrize("literal", ["192.0.2.1", "2001:db8::1"])
def test_offline_unrouted_ip_literal_is_566(ec2x, literal):
    assert ec2x.at("AT+QIACT=1") == OK
    assert ec2x.at(f'AT+QSSLOPEN=1,0,0,"{literal}",443') == OK
    assert ec2x_opened(ec2x, 0) == 566
    assert ec2x.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 566,socket connection failed\r\n\r\nOK\r\n"
    assert ec2x.at('AT+QSSLOPEN=1,0,0,"unrouted.example",443') == OK
    assert ec2x_opened(ec2x, 0) == 565
