"""Review of today's changes (3999fc7..392af6e), fourth reviewer: the DTLS renegotiation timer
(9a3fe89, bf5a770), stop signals during start-up in one list (54c973f, emulator/stop_signals.py)
and seclevel 2 without a client pair (bb363be).

Two problems found, both in the seclevel 2 change, both fixed (the tests say "Was a bug"):

* tls_engine/config.py `_build_configuration`: "no client pair" is decided on the truthiness
  of the bytes (`client_cert_pem or client_key_pem`), so an EC2x context whose clientcert and
  clientkey name files that exist but are EMPTY (AT+QFOPEN/QFCLOSE, or an AT+QFUPL ended by
  "+++" before any byte) opens at seclevel 2 with no client certificate, while a set path
  must hold its material ("material that is not a certificate / key fails the open (552)",
  docs/behaviour.md; before bb363be it was 552).  One empty file of the two is 552 still.
* emulator/sockets/context.py `to_tls_settings`: the "neither path set = no client
  certificate" rule (the EC2x note's troubleshooting) applies to the ML302 too, whose manual
  (sec. 2.1 remark) requires the client certificate and key at seclevel 2; an ML302 context
  with clientcert and clientkey set to "" opens at seclevel 2 with no client certificate,
  although AT+QSSLCFG itself warns "AT+QSSLOPEN will fail at seclevel >= 1" for such a path
  and docs/behaviour.md (ML302) says non-slot paths make seclevel 1/2 opens fail (-1).
  Fixed: the profile key ssl.client_pair_required (ml302.toml true), and "no pair" means no
  path set (None), an empty file being material that fails.

The other tests pin reviewed paths that were right and not yet covered: the ML302's default
slot paths with empty slots at seclevel 2 (-1, as its manual asks, whatever the server), half
an EC2x pair with one empty file (552), and the stop-signal list shared by `python -m
emulator` (a module object of its own) and the CLI, and by the `trace` tool's path.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from emulator.testing.peers import TlsServer, default_pki
from tests.e2e.cli_support import ROOT, came_up_after_a_stop
from tests.e2e.ml302_support import HOST as ML_HOST, routed_servers
from tests.e2e.ssl_options_support import cfg, close, open_ssl, trust
from tests.e2e.test_ml302_ssl import at, attach, secwrite


# -- helpers ------------------------------------------------------------------------------------
def empty_file(modem, name: str) -> None:
    """A file of 0 bytes, made as a host can (AT+QFOPEN creates it, AT+QFCLOSE)."""
    answer = modem.at(f'AT+QFOPEN="{name}",0')
    handle = int(re.search(rb"\+QFOPEN: (\d+)", answer).group(1))
    assert modem.at(f"AT+QFCLOSE={handle}") == b"\r\nOK\r\n"
    assert f'+QFLST: "{name.split(":")[-1]}",0'.encode() in modem.at('AT+QFLST="*"')


@pytest.fixture
def ml_server(emulator):
    """ml_server(client_ca=None) -> an OpenSSL server routed as the ML302 manual's host:443."""
    shared = default_pki()
    routed = routed_servers(emulator, shared.issue("ml302-server", ML_HOST).leaf, mode="http",
                            ciphers="DEFAULT:@SECLEVEL=0")
    started = next(routed)

    def start(client_ca=None) -> TlsServer:
        return started(client_ca=client_ca, require_client_cert=client_ca is not None)
    yield start
    next(routed, None)


def ml302_open(host) -> int:
    """AT+QSSLOPEN on ssid 0 (context 0); returns the connectcode of +QSSLOPEN."""
    at(host, f'AT+QSSLOPEN=0,0,"{ML_HOST}",443,0', b"\r\nOK\r\n")
    line = host.read_until(re.compile(rb"\r\n\+QSSLOPEN: 0,-?\d+\r\n"), timeout=20)
    return int(re.search(rb"(-?\d+)\r\n$", line).group(1))


# == BUG 1: EC2x, clientcert and clientkey naming empty files: opens at seclevel 2 ================
# Was a bug, fixed: tls_engine/config.py decided "no client pair" on the truthiness of the
# bytes, so two EMPTY files opened at seclevel 2 with no client certificate instead of 552.
def test_seclevel_2_with_both_client_files_empty_fails_the_open(ec2x, net, pki):
    empty_file(ec2x, "UFS:empty_cert.pem")
    empty_file(ec2x, "UFS:empty_key.pem")
    cfg(ec2x, "clientcert", 1, '"UFS:empty_cert.pem"')
    cfg(ec2x, "clientkey", 1, '"UFS:empty_key.pem"')
    trust(ec2x, 1, pki.ca.cert_pem, seclevel=2)
    with TlsServer(pki.server) as server:              # asks for no client certificate
        net(server)
        code = open_ssl(ec2x, 1)
        if code == 0:
            close(ec2x)
    assert code == 552


# Pinned (right today): one empty file of the pair is 552, the other half being valid.
def test_seclevel_2_with_one_client_file_empty_fails_the_open(ec2x, net, pki):
    ec2x.upload("UFS:client.pem", pki.client.cert_pem)
    empty_file(ec2x, "UFS:empty_key.pem")
    cfg(ec2x, "clientcert", 1, '"UFS:client.pem"')
    cfg(ec2x, "clientkey", 1, '"UFS:empty_key.pem"')
    trust(ec2x, 1, pki.ca.cert_pem, seclevel=2)
    with TlsServer(pki.server) as server:
        net(server)
        assert open_ssl(ec2x, 1) == 552
        ec2x.upload("UFS:client.key", pki.client.key_pem)
        cfg(ec2x, "clientkey", 1, '"UFS:client.key"')  # the real key: the same context opens
        assert open_ssl(ec2x, 1) == 0
        close(ec2x)


# == BUG 2: ML302, clientcert and clientkey set to "": opens at seclevel 2 ======================
# Was a bug, fixed: the EC2x rule "neither clientcert nor clientkey set = no client
# certificate" applied to the ML302 too, whose manual (2.1 remark) needs the pair at seclevel 2:
# paths set to "" opened with 0 instead of -1 (now the profile's ssl.client_pair_required).
def test_ml302_seclevel_2_with_empty_client_paths_fails_the_open(ml302, ml_server):
    ml_server()                                        # asks for no client certificate
    attach(ml302)
    secwrite(ml302, 0, default_pki().ca.ca.cert_pem.bytes())
    at(ml302, 'AT+QSSLCFG="clientcert",0,""', b"\r\nOK\r\n")
    at(ml302, 'AT+QSSLCFG="clientkey",0,""', b"\r\nOK\r\n")
    at(ml302, 'AT+QSSLCFG="seclevel",0,2', b"\r\nOK\r\n")
    code = ml302_open(ml302)
    if code == 0:
        at(ml302, "AT+QSSLCLOSE=0", b"\r\nOK\r\n\r\n0,CLOSE OK\r\n")
    assert code == -1


# Pinned (right today): the ML302's default slot paths with the client slots empty: seclevel 2
# fails (-1) also against a server that asks for no client certificate (the manual requires
# the pair at seclevel 2); seclevel 1 on the same context opens.
def test_ml302_seclevel_2_with_empty_client_slots_fails_whatever_the_server(ml302, ml_server):
    ml_server()
    attach(ml302)
    secwrite(ml302, 0, default_pki().ca.ca.cert_pem.bytes())
    for slot in (1, 2):
        ml302.write(f"AT+QSECDEL={slot}\r")
        ml302.read_until(b"OK\r\n")
    at(ml302, 'AT+QSSLCFG="seclevel",0,2', b"\r\nOK\r\n")
    assert ml302_open(ml302) == -1
    at(ml302, 'AT+QSSLCFG="seclevel",0,1', b"\r\nOK\r\n")
    assert ml302_open(ml302) == 0
    at(ml302, "AT+QSSLCLOSE=0", b"\r\nOK\r\n\r\n0,CLOSE OK\r\n")


# == stop signals during start-up: one list (emulator/stop_signals.py) ===========================
# `python -m emulator` runs emulator/__main__.py as a module object of its own ("__main__",
# not emulator.__main__): its loading handler must note the signal where main() reads it.  The
# simulation of test_review_today_2 (a handler's SystemExit swallowed, as in a finalizer),
# through runpy as `python -m` does.
_RUN_AS_MAIN = r"""
import os, runpy, signal, sys
import emulator.tools.cli as cli
assert "emulator.__main__" not in sys.modules
sys.argv = ["modem-emulator", "--offline", "--state-dir", sys.argv[1], "--link", sys.argv[2]]
real = cli.build_parser
def parser_swallowing_a_stop():
    try:
        os.kill(os.getpid(), signal.SIGTERM)       # the entry point's handler: noted, SystemExit ...
    except SystemExit:
        pass                                       # ... swallowed
    return real()
cli.build_parser = parser_swallowing_a_stop
runpy.run_module("emulator", run_name="__main__", alter_sys=True)
print("NOT REACHED")
"""


def test_python_m_emulator_notes_a_swallowed_stop_where_main_reads_it(tmp_path):
    started, code, err = came_up_after_a_stop(_RUN_AS_MAIN, tmp_path)
    assert started == "", f"started on {started} after a SIGTERM during start-up"
    assert code == 0 and "Traceback" not in err, err[-2000:]
    assert not os.path.lexists(tmp_path / "modem")


# The tools: a stop noted while the modules loaded ends the run before the tool does anything;
# otherwise the tool runs under the handlers there were before (not the loading handler).
_TOOL = r"""
import os, signal, sys
import emulator.__main__ as entry
from emulator import stop_signals
sys.argv = ["modem-emulator", "trace", "-h"]
if os.environ["NOTED"] == "1":
    stop_signals.seen.append(signal.SIGTERM)
code = entry.run()
print("handlers", signal.getsignal(signal.SIGINT) is signal.default_int_handler,
      signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, signal.getsignal(signal.SIGHUP) is signal.SIG_DFL,
      file=sys.stderr)
sys.exit(code)
"""


@pytest.mark.parametrize("noted", [False, True])
def test_trace_tool_after_the_loading_window(tmp_path, noted):
    proc = subprocess.run([sys.executable, "-c", _TOOL], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "NOTED": "1" if noted else "0"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    if noted:
        assert proc.stdout == ""                       # the usage was never printed
    else:
        assert "trace show" in proc.stdout             # the tool ran ...
        assert "handlers True True True" in proc.stderr, proc.stderr[-2000:]   # ... under the old handlers
