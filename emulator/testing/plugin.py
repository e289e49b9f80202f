"""pytest plugin (installed with the package: entry point pytest11 "modem_emulator").

Fixtures
    modem       a fresh emulated module for the test (offline: only routed names connect),
                EC2x unless the test says otherwise:
                    @pytest.mark.modem_profile("ml302")                 (or a profile .toml path)
                    @pytest.mark.parametrize("modem", ["ec2x", "ml302"], indirect=True)
                on a port with no hang-up line (the CLI's --uart: closing the device is not
                seen by the module, as on a UART with no DTR wired):
                    @pytest.mark.modem_uart
                on the modem's manual clock (its timers -- timeouts, start-up URCs, network
                conditions -- move only with modem.advance(seconds)):
                    @pytest.mark.modem_manual_time
                yields a ModemHandle: .path (the pty device), .profile, .control(op, **kw),
                .scenario(path) (a scenario file: faults by time or on the host's commands),
                .route(host, port, server), .advance(seconds) (manual time), .trace (its
                trace file), .trace_tail(n), .state_dir, .emulator (the BackgroundEmulator),
                .port (the ModemPort).  The handle is the test's: its modem is stopped when
                the test ends (a call after that raises RuntimeError saying so).
    tls_server  an OpenSSL echo server on loopback (emulator.testing.peers.TlsServer) whose
                certificate comes from a throw-away trustme CA, already routed into `modem`:
                the host dials tls_server.host:tls_server.port ("www.iottest.work":443 unless
                the marker says otherwise) and reaches it.  .ca_pem (bytes, to upload with
                AT+QFUPL), .ca_path, .server (the TlsServer: connections, wait_received, ...).
                    @pytest.mark.tls_server(mode="http", host="api.example.com", port=8443)
                    @pytest.mark.tls_server("http")          (the mode may come first, alone)
When a test that used `modem` fails, the last lines of its trace are printed with the failure.

Everything heavy is imported inside the fixtures: the plugin loads in every pytest run of an
environment that has the package, and must cost nothing there (and need no test extras).
"""
from __future__ import annotations

from pathlib import Path

import pytest

TRACE_TAIL = 40                       # trace lines shown with a failure
_HANDLE = pytest.StashKey["ModemHandle"]()


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "modem_profile(name): the profile the `modem` fixture "
                                       "starts: ec2x (default), ml302 or a profile .toml path")
    config.addinivalue_line("markers", "modem_uart: the `modem` fixture's port has no hang-up line "
                                       "(--uart): the host closing the device is not seen by the module")
    config.addinivalue_line("markers", "modem_manual_time: the `modem` fixture's timers move only with "
                                       "modem.advance(seconds)")
    config.addinivalue_line("markers", "tls_server(mode='echo', host='www.iottest.work', port=443, "
                                       "**TlsServer options): how the `tls_server` fixture serves")


class ModemHandle:
    """What the `modem` fixture yields."""

    def __init__(self, emulator, port, profile: str, trace: Path, state_dir: Path) -> None:
        self.emulator = emulator          # emulator.io.app.BackgroundEmulator
        self.port = port                  # emulator.io.app.ModemPort
        self.profile = profile
        self.trace = trace
        self.state_dir = state_dir

    @property
    def path(self) -> str:
        """The device to open (pyserial, your driver): /dev/pts/N.  RuntimeError once the
        test is over (the kernel may give that number to another test's modem)."""
        if not self.emulator.running:
            raise RuntimeError(f"this modem stopped when its test ended: {self.port.path} is no "
                               f"longer it")
        return self.port.path

    def control(self, op: str, **kw) -> dict:
        """The control API (state, drop, pdp_deact, send_fail, dtr, urc, reboot, ...):
        {"ok": True, ...} or {"ok": False, "error": ...}."""
        modem = kw.pop("modem", 0)              # (this handle's emulator has modem 0 only)
        return self.emulator.control(op, modem, **kw)

    def scenario(self, scenario):
        """Run a scenario file (a TOML path, or a dict of the same shape) against this
        modem from now on: its steps fire by time or on the host's commands
        (emulator/tools/scenario.py).  Returns the ScenarioRun (.fired: the steps that ran)."""
        return self.emulator.run_scenario(scenario)

    def route(self, host: str, port: int, server) -> None:
        """Connections the host opens to host:port go to `server`: anything with
        .address (addr, port) or .port, an (addr, port) pair, or a port on 127.0.0.1."""
        if isinstance(server, int):
            addr, dport = "127.0.0.1", server
        elif isinstance(server, tuple):
            addr, dport = server
        elif isinstance(getattr(server, "address", None), tuple):
            addr, dport = server.address[:2]
        else:
            addr, dport = "127.0.0.1", server.port
        # (on the loop thread, as every call of the handle: a stopped one raises)
        self.emulator.run(self.emulator.router.add_map, host, int(port), addr, int(dport))

    def advance(self, seconds: float) -> int:
        """Move the modem's clock on by `seconds` (@pytest.mark.modem_manual_time): the timers
        due by then fire; returns how many did."""
        if not self.emulator.run(lambda: self.port.modem.timers.manual):
            raise RuntimeError("modem.advance() needs the modem on manual time: mark the test "
                               "@pytest.mark.modem_manual_time")
        return self.emulator.advance(self.port, seconds)

    def trace_tail(self, lines: int = TRACE_TAIL) -> list[str]:
        """The last `lines` of the trace, rendered as `modem-emulator trace show` does."""
        from emulator.tools.trace import read_trace, render
        if not self.trace.exists():
            return []
        return render(read_trace(self.trace))[-lines:]


def _profile_of(request) -> str:
    # The test's own indirect parametrization (`parametrize("modem", [...], indirect=True)`)
    # is the most specific choice: it wins over a modem_profile marker, a module's too.
    if hasattr(request, "param"):
        return request.param
    marker = request.node.get_closest_marker("modem_profile")
    if marker is not None:
        name = marker.args[0] if marker.args else marker.kwargs.get("name")
        if not isinstance(name, str) or not name:
            pytest.fail('@pytest.mark.modem_profile needs a profile name: modem_profile("ml302") '
                        'or modem_profile(name="ml302")', pytrace=False)
        return name
    return "ec2x"


@pytest.fixture
def modem(request, tmp_path_factory):
    """A fresh emulated module for this test (EC2x unless @pytest.mark.modem_profile("ml302"),
    a profile path, or indirect parametrization says otherwise), offline: only names routed
    with .route() (or by the tls_server fixture) connect.  Yields a ModemHandle: .path is the
    pty your driver opens; .control(op, ...), .scenario(file), .advance(s) with
    @pytest.mark.modem_manual_time, .trace_tail().  Stopped when the test ends."""
    from emulator.io.app import BackgroundEmulator
    profile = _profile_of(request)
    where = tmp_path_factory.mktemp("modem")
    trace, state_dir = where / "modem.trace", where / "state"
    with BackgroundEmulator(offline=True) as emu:
        uart = request.node.get_closest_marker("modem_uart") is not None
        manual = request.node.get_closest_marker("modem_manual_time") is not None
        port = emu.add_modem(profile, state_dir=state_dir, trace=str(trace), hangup_on_close=not uart,
                             manual_time=manual)
        handle = ModemHandle(emu, port, profile, trace, state_dir)
        request.node.stash[_HANDLE] = handle
        yield handle


class TlsServerHandle:
    """What the `tls_server` fixture yields."""

    def __init__(self, server, host: str, port: int, ca) -> None:
        self.server = server              # emulator.testing.peers.TlsServer
        self.host = host                  # what the modem's host dials
        self.port = port
        self.ca_pem: bytes = ca.cert_pem  # the CA that signed the server's certificate
        self.ca_path: Path = ca.cert_path

    @property
    def address(self) -> tuple[str, int]:
        """Where it really listens (127.0.0.1, ephemeral)."""
        return self.server.address

    @property
    def connections(self):
        return self.server.connections

    def wait_received(self, size: int, index: int = -1, timeout: float = 5.0) -> bytes:
        return self.server.wait_received(size, index, timeout)


@pytest.fixture
def tls_server(request, modem):
    """An OpenSSL echo server on loopback with a throw-away CA, routed into `modem`: the host
    dials tls_server.host:tls_server.port ("www.iottest.work":443 by default) and reaches it.
    .ca_pem / .ca_path: the CA to upload; .server: the TlsServer (connections, received).
    @pytest.mark.tls_server(mode="http", host=..., port=..., **TlsServer options)."""
    from emulator.testing.peers import SERVER_NAMES, TlsServer, default_pki
    found = request.node.get_closest_marker("tls_server")
    marker = dict(found.kwargs) if found is not None else {}
    if found is not None and found.args:
        if len(found.args) > 1 or "mode" in marker:
            pytest.fail("@pytest.mark.tls_server takes the mode alone positionally: "
                        'tls_server("http", host=..., port=...)', pytrace=False)
        marker["mode"] = found.args[0]
    host = marker.pop("host", "www.iottest.work")
    port = marker.pop("port", 443)
    pki = default_pki()
    cert = pki.server if host in SERVER_NAMES else pki.issue("plugin-server", host)
    with TlsServer(cert, **{"mode": "echo", **marker}) as server:
        modem.route(host, port, server)
        yield TlsServerHandle(server, host, port, pki.ca)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    handle = item.stash.get(_HANDLE, None)
    if handle is None:
        return
    try:
        tail = handle.trace_tail()
    except Exception as exc:                 # the trace must never hide the failure itself
        tail = [f"(trace unreadable: {exc})"]
    if tail:
        report.sections.append((f"modem-emulator trace ({handle.trace}, last {len(tail)} lines)",
                                "\n".join(tail)))
