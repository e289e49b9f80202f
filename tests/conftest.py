from __future__ import annotations

import os

import pytest

from emulator.io.app import BackgroundEmulator
from tests.host import Host


@pytest.fixture
def emulator():
    """An emulator loop in a thread; offline: every host name a test dials must be routed."""
    with BackgroundEmulator(offline=True) as emu:
        yield emu


@pytest.fixture
def open_modem(emulator, tmp_path):
    """open_modem(profile) -> (Host on the pty, ModemPort)."""
    hosts: list[Host] = []

    def factory(profile: str = "ec2x", echo: bool = False, **kwargs):
        kwargs.setdefault("state_dir", tmp_path / f"state-{len(hosts)}")
        port = emulator.add_modem(profile, **kwargs)
        host = Host(port.path)
        hosts.append(host)
        if not echo:
            assert host.at("ATE0").endswith(b"OK\r\n")
        return host, port

    yield factory
    for host in hosts:
        host.close()


@pytest.fixture
def ec2x(open_modem):
    host, _ = open_modem("ec2x")
    return host


@pytest.fixture
def ml302(open_modem):
    host, _ = open_modem("ml302")
    return host


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
