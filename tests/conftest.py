"""Fixtures and marks for the whole suite.

The peers, the PKI and the pty host live in emulator.testing, shared with bench/; helpers
shared by test modules in tests/e2e/*_support.py.  A few replayed drivers (test_driver_paths'
Driver, the RT-Thread / esp-modem / Mbed models, test_hardening_at's sans-IO modem) are
imported by later adversarial files from the module that introduced them."""
from __future__ import annotations

import logging
import os

import pytest

from emulator.io.app import BackgroundEmulator
from emulator.testing.host import Host
from emulator.testing.peers import default_pki
from tests.e2e.ssl_options_support import HOST, PORT


# Property tests draw the same examples on every run: CI must not turn red on a draw it never
# made before.  HYPOTHESIS_RANDOM=1 explores new ones (run it by hand, then pin what it finds).
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("modem-ci", derandomize=True, database=None)
_hypothesis_settings.register_profile("modem-explore")
_hypothesis_settings.load_profile("modem-explore" if os.environ.get("HYPOTHESIS_RANDOM") else "modem-ci")


def pytest_configure(config):
    config.addinivalue_line("markers", "needs_native: skip unless tls_engine.native works "
                                       "(resumption, key log, RC4/3DES, renegotiation)")


SLOW_FIRST_APPLIED = pytest.StashKey[bool]()


def slow_first_rows() -> list[tuple[float, str]]:
    """tests/slow_first.txt: (seconds, node id) per line, in the file's order."""
    rows = []
    with open(os.path.join(os.path.dirname(__file__), "slow_first.txt")) as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                seconds, nodeid = line.split(None, 1)    # (a test id may hold spaces)
                rows.append((float(seconds), nodeid.strip()))
    return rows


def pytest_collection_modifyitems(config, items):
    """The slowest tests first (tests/slow_first.txt, longest first), the rest in collection
    order: with pytest-xdist's load scheduling a long test collected late (the replay and
    state-machine files sort last) ran on one worker while the others had run out of work.
    Every worker sorts the same collection the same way, as xdist requires.  In one process
    (TEST_WORKERS=0) the order buys nothing and would build module fixtures again each time a
    module comes back: collection order is kept there."""
    config.stash[SLOW_FIRST_APPLIED] = hasattr(config, "workerinput")
    if not config.stash[SLOW_FIRST_APPLIED]:
        return
    listed = {nodeid: seconds for seconds, nodeid in slow_first_rows()}
    items.sort(key=lambda item: -listed.get(item.nodeid, 0.0))


def pytest_runtest_setup(item):
    if item.get_closest_marker("needs_native"):
        from tls_engine import native
        if not native.available():
            pytest.skip(f"tls_engine.native unusable: {native.unavailable_reason()}")


@pytest.fixture(scope="session")
def pki():
    """The run's shared throw-away PKI (emulator.testing.peers.pki.Pki)."""
    return default_pki()


@pytest.fixture
def emulator():
    """An emulator loop in a thread; offline: every host name a test dials must be routed."""
    with BackgroundEmulator(offline=True) as emu:
        yield emu


@pytest.fixture
def open_modem(emulator, tmp_path):
    """open_modem(profile) -> (Host on the pty, ModemPort)."""
    yield from modem_factory(emulator, tmp_path)


def modem_factory(emulator, tmp_path):
    """The body of a fixture like open_modem on any emulator: yields factory(profile="ec2x",
    echo=False, **add_modem kwargs) -> (Host with ATE0 sent unless echo, ModemPort); each
    modem keeps its state in its own tmp_path dir; the hosts are closed at the end."""
    hosts: list[Host] = []

    def factory(profile: str = "ec2x", echo: bool = False, **kwargs):
        kwargs.setdefault("state_dir", tmp_path / f"state-{len(hosts)}")
        port = emulator.add_modem(profile, **kwargs)
        host = Host(port.path)
        hosts.append(host)
        emulator.run(port.port.look_for_host)       # (not at the next 50 ms poll)
        if not echo:
            assert host.at("ATE0").endswith(b"OK\r\n")
        return host, port

    yield factory
    for host in hosts:
        host.close()


@pytest.fixture
def driver_port(open_modem):
    """(pty path, ModemPort) of a fresh EC2x with echo on, as the module comes up, its Host
    closed: the replayed driver under test opens (and owns) the port itself."""
    host, port = open_modem("ec2x", echo=True)
    host.close()
    return host.path, port


@pytest.fixture
def driver_path(driver_port):
    """driver_port's pty path alone."""
    return driver_port[0]


@pytest.fixture
def ec2x(open_modem):
    host, _ = open_modem("ec2x")
    return host


@pytest.fixture
def ml302(open_modem):
    host, _ = open_modem("ml302")
    return host


@pytest.fixture
def net(emulator, ec2x):
    """ec2x with PDP context 1 active; route(server) maps HOST:PORT (or host:port) to
    127.0.0.1:server.port (server: anything with .port, or an (addr, port) pair's port)."""
    assert ec2x.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"

    def route(server, host: str = HOST, port: int = PORT) -> None:
        dst = server.address[1] if isinstance(getattr(server, "address", None), tuple) else server.port
        emulator.router.add_map(host, port, "127.0.0.1", dst)
    return route


@pytest.fixture
def echo(pki, emulator):
    """An OpenSSL echo server that "echo.example":443 is routed to."""
    from emulator.testing.peers import TlsServer
    with TlsServer(pki.server, mode="echo") as server:
        emulator.router.add_map("echo.example", 443, "127.0.0.1", server.address[1])
        yield server


@pytest.fixture
def tcp_echo(emulator):
    """A plain TCP echo server that socket_support.TCP_HOST:TCP_PORT is routed to."""
    yield from _plain_peer(emulator, "tcp", "echo")


@pytest.fixture
def tcp_sink(emulator):
    """A TCP server that only reads, at socket_support.TCP_HOST:TCP_PORT."""
    yield from _plain_peer(emulator, "tcp", "sink")


@pytest.fixture
def udp_echo(emulator):
    """A UDP echo server that socket_support.UDP_HOST:UDP_PORT is routed to."""
    yield from _plain_peer(emulator, "udp")


@pytest.fixture
def peer_factory(emulator):
    """peer_factory(hold_reading=False, rcvbuf=None) -> a socket_support.DrivenPeer (one TCP
    connection the test drives: send, half-close, hold its reading) that
    socket_support.TCP_HOST:TCP_PORT is routed to; closed at the end."""
    from tests.e2e.socket_support import TCP_HOST, TCP_PORT, DrivenPeer
    peers = []

    def make(**kw):
        peer = DrivenPeer(**kw)
        peers.append(peer)
        emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", peer.port)
        return peer
    yield make
    for peer in peers:
        peer.close()


def _plain_peer(emulator, kind: str, mode: str = "echo"):
    from emulator.testing.peers import TcpServer, UdpEchoServer
    from tests.e2e.socket_support import TCP_HOST, TCP_PORT, UDP_HOST, UDP_PORT
    server = TcpServer(mode) if kind == "tcp" else UdpEchoServer()
    host, port = (TCP_HOST, TCP_PORT) if kind == "tcp" else (UDP_HOST, UDP_PORT)
    with server:
        emulator.router.add_map(host, port, "127.0.0.1", server.port)
        yield server


@pytest.fixture
def ec2x_timed(emulator, open_modem):
    """(host, advance(s), port): an EC2x on manual time, ATE0, no PDP context active."""
    host, port = open_modem("ec2x", manual_time=True)
    return host, emulator.advancer(port, host), port


@pytest.fixture
def ec2x_on(open_modem):
    """(host, port): an EC2x on manual time with PDP context 1 active."""
    host, port = open_modem("ec2x", manual_time=True)
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
    return host, port


@pytest.fixture
def ec2x_strict(emulator, ec2x_on, caplog):
    """(host, advance(s), port): ec2x_on with advance() on its manual time; at the end no
    log record may carry a traceback or be an error (the adversarial tests' modem)."""
    yield from _strict(emulator, caplog, *ec2x_on)


@pytest.fixture
def ml302_strict(emulator, open_modem, caplog):
    """ec2x_strict for an ML302 (PDP context 1 active)."""
    caplog.set_level(logging.INFO)
    host, port = open_modem("ml302", manual_time=True)
    assert host.at('AT+CGDCONT=1,"IP","CMNET"') == b"\r\nOK\r\n"
    assert host.at("AT+CGACT=1,1").endswith(b"OK\r\n")
    yield from _strict(emulator, caplog, host, port)


@pytest.fixture
def strict_log(caplog):
    """caplog at INFO; at the end no record may carry a traceback or be an error."""
    caplog.set_level(logging.INFO)
    yield caplog
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad]


def _strict(emulator, caplog, host, port):
    caplog.set_level(logging.INFO)

    advance = emulator.advancer(port, host)
    yield host, advance, port
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With MODEM_EMULATOR_REQUIRE_ALL=1 (make test, CI) a skip is a failure: the
    native TLS layer or the openssl CLI going missing must not pass silently."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("MODEM_EMULATOR_REQUIRE_ALL") == "1" \
            and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped, but MODEM_EMULATOR_REQUIRE_ALL=1 forbids skips: {reason}"


@pytest.fixture
def small_pipe():
    """(read fd, text stream on a 4 KiB pipe's write end): a log writer's pipe that fills."""
    import fcntl
    from tests.pipes import F_SETPIPE_SZ
    r, w = os.pipe()
    fcntl.fcntl(w, F_SETPIPE_SZ, 4096)
    stream = os.fdopen(w, "w")
    yield r, stream
    stream.close()
    os.close(r)
