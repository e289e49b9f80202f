"""An independent walk through README.md as a new user reads it: concrete statements that
no docs test (test_docs_truth.py, test_docs_claims.py, test_review_behaviour_claims*.py) or
other e2e test pins yet, tried against the real program.

Covered here: the demo's client certificate and key for seclevel 2 (a server insisting on a
client certificate from the demo CA takes them), the demo's UDP echo on 8009 and its HTTPS
server from an EC2x; the host seeing its own name and port through a route (AT+QSSLSTATE,
SNI); the server-name check ("names compared byte for byte" against what Mbed TLS does); the
log's words for a handshake that never finishes; a `--config` file alone giving `offline =
true` and its `[routes]`, `[dns]`, `[ping]`, `[listen]` tables, with only the device path on
stdout; `--route` names in any case and with a trailing dot; `modem-emulator` being `python
-m emulator`; `trace show`'s options; every control-socket example line sent as printed;
`register`'s "0/2/3/4 drop the PDP contexts"; every command of the surface table answering
its test form; each kind of refused input being one line and exit 2; a bad scenario file
stopping start-up; the state dir's inventory and modes; log lines past 10,000 dropped and
counted; one seal worker per process; manual time leaving AT+CCLK on the computer's clock;
`python -m bench.soak --help`.

Each test checks first that the README still says what it tests.  A README statement the
program contradicts is a strict xfail whose reason starts "DOCS:".  The CLI runs as a
subprocess with --offline (or offline = true) and loopback routes only, and each test stops
what it starts; in-process emulators are offline and every name dialled is routed."""
from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emulator.io.app import BackgroundEmulator
from emulator.testing.host import Host
from emulator.testing.peers import TcpServer, TlsServer
from emulator.testing.peers.pki import default_pki
from tests.e2e import cli_support

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
PY = sys.executable
OK = b"\r\nOK\r\n"


def readme_says(snippet: str) -> None:
    squash = lambda s: re.sub(r"\s+", " ", s)          # noqa: E731
    assert squash(snippet) in squash(README), f"README no longer says {snippet!r}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def activate(host: Host) -> None:
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK


def new_host(emu: BackgroundEmulator, port) -> Host:
    host = Host(port.path)
    emu.run(port.port.look_for_host)
    assert host.at("ATE0").endswith(b"OK\r\n")
    return host


# ----------------------------------------------------------------------------------------
# the demo's client pair; the host's own name through a route

def test_demo_client_pair_is_a_real_pair_of_the_demo_ca_and_the_host_keeps_its_name(tmp_path):
    """README "A first session": the demo uploads "a client certificate and key for seclevel
    2, `UFS:demo-client.pem` and `UFS:demo-client.key`"; "--route: ... The host still sees its
    own name and port (in AT+QSSLSTATE, SNI and certificate checks)".  A server that insists
    on a client certificate issued by the demo CA accepts the pair at seclevel 2."""
    readme_says("with a client\ncertificate and key for seclevel 2, `UFS:demo-client.pem` and "
                "`UFS:demo-client.key`")
    readme_says("The host still sees its own name and port (in\n  AT+QSSLSTATE, SNI and certificate checks)")
    pki = default_pki()
    with BackgroundEmulator(offline=True, demo=True) as emu:
        demo_ca = emu.emulator.demo.ca_pem
        with TlsServer(pki.server, mode="echo", client_ca=demo_ca, require_client_cert=True) as server:
            emu.router.add_map("localhost", 4443, "127.0.0.1", server.address[1])
            port = emu.add_modem("ec2x", state_dir=tmp_path / "st")
            host = new_host(emu, port)
            try:
                listing = host.at('AT+QFLST="*"')
                assert b'+QFLST: "demo-client.pem",' in listing, listing
                assert b'+QFLST: "demo-client.key",' in listing, listing
                activate(host)
                assert host.upload("UFS:server-ca.pem", pki.ca.cert_pem).endswith(b"OK\r\n")
                assert host.at('AT+QSSLCFG="seclevel",1,2;+QSSLCFG="cacert",1,"UFS:server-ca.pem";'
                               '+QSSLCFG="clientcert",1,"UFS:demo-client.pem";'
                               '+QSSLCFG="clientkey",1,"UFS:demo-client.key";'
                               '+QSSLCFG="sni",1,1') == OK          # (SNI only with sni=1)
                assert host.at('AT+QSSLOPEN=1,1,4,"localhost",4443,0') == OK
                assert host.read_until(re.compile(rb"\+QSSLOPEN: 4,-?\d+\r\n"), timeout=20) == \
                    b"\r\n+QSSLOPEN: 4,0\r\n"
                conn = server.wait_handshake(timeout=20)
                assert conn.client_cert is not None                    # verified by the demo CA
                subject = dict(x[0] for x in conn.client_cert["subject"])
                assert subject.get("commonName") == "modem-emulator demo client", subject
                assert conn.sni == "localhost"
                state = host.at("AT+QSSLSTATE=4")
                assert re.fullmatch(rb'\r\n\+QSSLSTATE: 4,"SSLClient","localhost",4443,\d+,2,1,4,0,'
                                    rb'"usbmodem",1\r\n\r\nOK\r\n', state), state
                assert host.send_data(4, b"hello") == b"\r\nSEND OK\r\n"
                assert host.read_until(b'+QSSLURC: "recv",4\r\n')
                assert host.at("AT+QSSLRECV=4,100") == b"\r\n+QSSLRECV: 5\r\nhello\r\n\r\nOK\r\n"
                assert host.at("AT+QSSLCLOSE=4") == OK
            finally:
                host.close()


# ----------------------------------------------------------------------------------------
# the log's words

def test_a_handshake_that_never_finishes_is_logged_in_the_readmes_words(tmp_path, caplog):
    """README: "Logs (stderr) say why a connection failed in words: ... "TLS handshake not
    finished within 10 s"" -- a server that takes the TCP connection and never answers the
    ClientHello, with AT+QSSLCFG="negotiatetime",1,10."""
    readme_says('"TLS handshake not finished within 10 s"')
    caplog.set_level(logging.INFO)
    with BackgroundEmulator(offline=True) as emu, TcpServer("sink") as sink:
        emu.router.add_map("silent.example", 443, "127.0.0.1", sink.port)
        port = emu.add_modem("ec2x", state_dir=tmp_path / "st", manual_time=True)
        host = new_host(emu, port)
        advance = emu.advancer(port, host)
        try:
            activate(host)
            assert host.at('AT+QSSLCFG="negotiatetime",1,10') == OK
            assert host.at('AT+QSSLOPEN=1,1,4,"silent.example",443,0') == OK
            for _ in range(400):                                   # the ClientHello reached it
                if sink.connections and sink.connections[0].received:
                    break
                host.quiet_for(0.05)
            assert sink.connections and sink.connections[0].received, "no ClientHello reached the server"
            advance(10)
            urc = host.read_until(re.compile(rb"\+QSSLOPEN: 4,-?\d+\r\n"), timeout=20)
            assert not urc.endswith(b"+QSSLOPEN: 4,0\r\n"), urc
        finally:
            host.close()
    words = [r.getMessage() for r in caplog.records if r.name.startswith("emulator")]
    assert any("TLS handshake not finished within 10 s" in w for w in words), words[-20:]


# ----------------------------------------------------------------------------------------
# --config alone; --route names

def _qping_ms(host: Host, name: str) -> int:
    assert host.at(f'AT+QPING=1,"{name}",4,1') == OK
    got = host.read_until(re.compile(rb"\+QPING: 0,1,1,0,\d+,\d+,\d+\r\n"), timeout=20)
    m = re.search(rb'\r\n\+QPING: 0,"[\d.]+",32,(\d+),255\r\n', got)
    assert m, got
    return int(m.group(1))


def test_a_config_file_alone_gives_offline_and_its_four_tables(tmp_path):
    """README "--route": "`--config FILE` takes the same as a TOML `[routes]` table, the
    `[dns]`, `[ping]` and `[listen]` tables of the options below, and `offline = true` as a
    top-level key"; "With `--offline` every unrouted name fails as a DNS error"; "The first
    line of stdout is the device path ... hints and logs go to stderr".  Started with the
    file and no --offline flag."""
    readme_says("and `offline = true` as a top-level key\n  (before the first table")
    readme_says("`--config` (`2020 = \"127.0.0.1:40123\"`)")
    listen_to = free_port()
    with TcpServer("echo") as echo:
        config = tmp_path / "net.toml"
        config.write_text(
            "offline = true\n"
            "[routes]\n"
            f'"collector.example:9000" = "127.0.0.1:{echo.port}"\n'
            "[dns]\n"
            '"collector.example" = "203.0.113.77"\n'
            "[ping]\n"
            '"collector.example" = 150\n'
            "[listen]\n"
            f'2020 = "127.0.0.1:{listen_to}"\n')
        link = tmp_path / "modem"
        log = open(tmp_path / "err", "w")
        proc = cli_support.start("--config", str(config), "--state-dir", str(tmp_path / "st"),
                                 "--link", str(link), stderr=log)
        try:
            assert proc.stdout.readline().strip() == str(link)
            host = Host(str(link))
            try:
                assert host.at("ATE0").endswith(b"OK\r\n")
                activate(host)
                # offline from the file: an unrouted name is a DNS error, never the network
                assert host.at('AT+QIDNSGIP=1,"unrouted.example"') == OK
                assert host.read_until(b'"dnsgip",565\r\n') == b'\r\n+QIURC: "dnsgip",565\r\n'
                # [dns]
                assert host.at('AT+QIDNSGIP=1,"collector.example"') == OK
                assert host.read_until(b'"203.0.113.77"\r\n').endswith(b'+QIURC: "dnsgip","203.0.113.77"\r\n')
                # [ping]: not the 20 ms of a host without an entry
                assert _qping_ms(host, "collector.example") >= 150
                # [routes]
                assert host.at('AT+QIOPEN=1,0,"TCP","collector.example",9000,0,0') == OK
                assert host.read_until(b"+QIOPEN: 0,") + host.read_until(b"\r\n") == b"\r\n+QIOPEN: 0,0\r\n"
                host.write(b"AT+QISEND=0,5\r")
                assert host.read_until(b"> ") == b"\r\n> "
                host.write(b"hello")
                assert host.read_until(b"SEND OK\r\n").endswith(b"SEND OK\r\n")
                assert host.read_until(b'+QIURC: "recv",0\r\n')
                assert host.at("AT+QIRD=0,1500") == b"\r\n+QIRD: 5\r\nhello\r\n\r\nOK\r\n"
                # [listen]
                assert host.at('AT+QIOPEN=1,3,"TCP LISTENER","127.0.0.1",0,2020,0') == OK
                assert host.read_until(b"+QIOPEN: 3,0\r\n")
                with socket.create_connection(("127.0.0.1", listen_to), timeout=10) as client:
                    urc = host.seen(re.compile(rb'\+QIURC: "incoming",\d+,3,"127\.0\.0\.1",\d+\r\n'))
                    assert urc.endswith(b',%d\r\n' % client.getsockname()[1]), urc
            finally:
                host.close()
            rc = cli_support.stop(proc)
            rest = proc.stdout.read()
        finally:
            proc.kill()
            log.close()
    err = (tmp_path / "err").read_text()
    assert rc == 0, err
    assert rest == "", rest                                  # nothing but the device path
    assert "Traceback" not in err


def test_route_names_match_in_any_case_and_with_a_trailing_dot(tmp_path):
    """README "--route": "names match in any case and with a trailing dot
    (`www.iottest.work.`, as a resolver takes it)" -- given on the command line in one case,
    dialled in others."""
    readme_says("names match in any case and with a trailing dot\n  (`www.iottest.work.`, as a resolver takes it)")
    with TcpServer("echo") as echo:
        link = tmp_path / "modem"
        proc = cli_support.start("--offline", "--route", f"Collector.Example:9000=127.0.0.1:{echo.port}",
                                 "--state-dir", str(tmp_path / "st"), "--link", str(link))
        try:
            assert proc.stdout.readline().strip() == str(link)
            host = Host(str(link))
            try:
                assert host.at("ATE0").endswith(b"OK\r\n")
                activate(host)
                for cid, name in enumerate(("collector.example", "COLLECTOR.EXAMPLE.", "cOlLeCtOr.example.")):
                    assert host.at(f'AT+QIOPEN=1,{cid},"TCP","{name}",9000,0,0') == OK
                    urc = host.read_until(re.compile(rb"\+QIOPEN: %d,\d+\r\n" % cid), timeout=20)
                    assert urc.endswith(b"+QIOPEN: %d,0\r\n" % cid), (name, urc)
                deadline = time.monotonic() + 20                  # (the peer's accept thread)
                while len(echo.connections) < 3 and time.monotonic() < deadline:
                    time.sleep(0.02)
                assert len(echo.connections) == 3, echo.connections
            finally:
                host.close()
            assert cli_support.stop(proc) == 0
        finally:
            proc.kill()


# ----------------------------------------------------------------------------------------
# the programs the README names

def test_the_console_script_is_the_same_as_python_m_emulator(tmp_path):
    """README: "(`python -m emulator …` is the same.)" and "The commands below
    (`modem-emulator`, ...) are in `.venv/bin` too"."""
    readme_says("(`python -m emulator …` is the same.)")
    script = Path(PY).parent / "modem-emulator"
    assert script.exists(), script
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    by_script = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60,
                               cwd=ROOT, env=env)
    by_module = subprocess.run([PY, "-m", "emulator", "--help"], capture_output=True, text=True,
                               timeout=60, cwd=ROOT, env=env)
    assert by_script.returncode == by_module.returncode == 0
    assert by_script.stdout == by_module.stdout
    link = tmp_path / "modem"
    proc = subprocess.Popen([str(script), "--offline", "--link", str(link), "--state-dir", str(tmp_path / "st")],
                            cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == str(link)
        host = Host(str(link))
        try:
            assert host.at("ATE0;+CGMM") == b"ATE0;+CGMM\r\r\nEC25\r\n\r\nOK\r\n"
        finally:
            host.close()
        assert cli_support.stop(proc) == 0
    finally:
        proc.kill()


def test_trace_show_takes_the_synopsis_options():
    """README synopsis: `modem-emulator trace show FILE [--socket N] [--modem N]`."""
    readme_says("modem-emulator trace show FILE [--socket N] [--modem N]")
    r = subprocess.run([PY, "-m", "emulator", "trace", "show", "--help"], capture_output=True, text=True,
                       timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    options = set(re.findall(r"^  (--[a-z][a-z-]*)", r.stdout, re.M)) - {"--help"}
    assert options == {"--socket", "--modem"}, r.stdout


def test_soak_help_names_the_sizes_the_readme_gives():
    """README "Soak": "Sizes: `SOAK_LINES`, `SOAK_RACES`, `SOAK_KILLS`, `SOAK_MIB`; `SOAK_SEED`
    repeats a run (`python -m bench.soak --help`)"."""
    readme_says("Sizes: `SOAK_LINES`,\n`SOAK_RACES`, `SOAK_KILLS`, `SOAK_MIB`; `SOAK_SEED` repeats a run "
                "(`python -m bench.soak --help`)")
    r = subprocess.run([PY, "-m", "bench.soak", "--help"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    for name in ("SOAK_LINES", "SOAK_RACES", "SOAK_KILLS", "SOAK_MIB", "SOAK_SEED"):
        assert name in r.stdout, (name, r.stdout)


# ----------------------------------------------------------------------------------------
# the control op register

@pytest.mark.parametrize("stat, drops", [(0, True), (2, True), (4, True), (1, False), (5, False)])
def test_register_op_drops_the_pdp_contexts_for_0_2_3_4_only(tmp_path, stat, drops):
    """README control ops: `{"op": "register", "stat": 0}  # +CREG/+CGREG/+CEREG URCs (once
    AT+CREG=1/2 & co.); 0/2/3/4 drop the PDP contexts` (3 is tried in test_packet_domain)."""
    readme_says("0/2/3/4 drop the PDP contexts")
    with BackgroundEmulator(offline=True) as emu:
        port = emu.add_modem("ec2x", state_dir=tmp_path / "st")
        host = new_host(emu, port)
        try:
            activate(host)
            assert host.at("AT+CREG=1") == OK
            assert emu.control("register", stat=stat) == {"ok": True}
            if stat != 1:                                             # a change: its URC
                assert host.seen(b"+CREG: %d\r\n" % stat)
            if drops:
                assert host.seen(b'+QIURC: "pdpdeact",1\r\n')
            answer = host.at("AT+CGACT?")
            assert (b"+CGACT: 1,0\r\n" in answer) is drops, answer
            assert (b"+CGACT: 1,1\r\n" in answer) is not drops, answer
        finally:
            host.close()


# ----------------------------------------------------------------------------------------
# the control socket's examples, byte for byte as printed

def _readme_control_examples() -> dict[str, str]:
    """op -> the JSON text README prints for it (the echo | socat line's object included)."""
    text = README.split("### Make the modem misbehave", 1)[1].split("### From a field log", 1)[0]
    found: dict[str, str] = {}
    decoder = json.JSONDecoder()
    for line in text.splitlines():
        if not line.startswith("    ") or '{"op"' not in line:
            continue
        start = line.index('{"op"')
        obj, end = decoder.raw_decode(line, start)
        found[obj["op"]] = line[start:end]
    return found


class _Control:
    """The --control socket: one JSON object per line, one answer line each."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(30)
        self.sock.connect(str(path))
        self.buf = b""

    def ask(self, request: str) -> dict:
        self.sock.sendall(request.encode() + b"\n")
        while b"\n" not in self.buf:
            chunk = self.sock.recv(4096)
            assert chunk, "the control socket closed"
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def close(self) -> None:
        self.sock.close()


def _open_ssl_1(host: Host) -> None:
    assert host.at('AT+QSSLOPEN=1,1,1,"220.180.239.212",8010,0') == OK
    assert host.read_until(re.compile(rb"\+QSSLOPEN: 1,-?\d+\r\n"), timeout=20).endswith(b"+QSSLOPEN: 1,0\r\n")


def test_every_control_example_works_as_printed_on_the_control_socket(tmp_path):
    """README "Make the modem misbehave": each request line, sent as printed (JSON text and
    all) on `--control`'s socket of `--demo --offline`, does what its comment says."""
    readme_says("`--control PATH` serves a unix socket (0600) taking one JSON object per line and answering one\nline")
    examples = _readme_control_examples()
    assert set(examples) == {"state", "drop", "pdp_deact", "send_fail", "dns_fail", "net", "slow",
                             "uart_noise", "register", "dtr", "urc", "reboot"}, examples
    link, ctl_path = tmp_path / "modem", tmp_path / "modem.ctl"
    log = open(tmp_path / "err", "w")
    proc = cli_support.start("--demo", "--offline", "--control", str(ctl_path), "--link", str(link),
                             "--state-dir", str(tmp_path / "st"), stderr=log)
    ctl = None
    try:
        assert proc.stdout.readline().strip() == str(link)
        ctl = _Control(ctl_path)
        host = Host(str(link))
        try:
            assert host.at("ATE0").endswith(b"OK\r\n")
            activate(host)
            _open_ssl_1(host)
            # state: mode, PDP, every socket id in use
            state = ctl.ask(examples["state"])
            assert state["ok"] is True and [s["id"] for s in state["sockets"]] == [1], state
            # send_fail: the next 3 AT+QSSLSEND answer SEND FAIL
            assert ctl.ask(examples["send_fail"]) == {"ok": True}
            assert [host.send_data(1, b"x") for _ in range(4)] == [b"\r\nSEND FAIL\r\n"] * 3 + [b"\r\nSEND OK\r\n"]
            host.seen(b'+QSSLURC: "recv",1\r\n')
            # drop rst: reported like a peer close
            assert ctl.ask(examples["drop"]) == {"ok": True}
            assert host.seen(b'+QSSLURC: "closed",1\r\n')
            assert host.at("AT+QSSLCLOSE=1") == OK
            # pdp_deact: +QIURC: "pdpdeact",1 and the sockets closed
            _open_ssl_1(host)
            assert ctl.ask(examples["pdp_deact"]) == {"ok": True}
            assert host.seen(b'+QIURC: "pdpdeact",1\r\n') and host.seen(b'+QSSLURC: "closed",1\r\n')
            assert host.at("AT+QSSLCLOSE=1") == OK
            host.pending.clear()
            assert host.at("AT+QIACT=1") == OK
            # dns_fail: the next lookup of a name is 565
            assert ctl.ask(examples["dns_fail"]) == {"ok": True}
            assert host.at('AT+QIDNSGIP=1,"www.iottest.work"') == OK
            assert host.read_until(re.compile(rb'"dnsgip",\d+')) .endswith(b'"dnsgip",565')
            # uart_noise: fragments, every byte kept
            assert ctl.ask(examples["uart_noise"]) == {"ok": True}
            host.pending.clear()
            assert host.at("AT+CGMI") == b"\r\nQuectel\r\n\r\nOK\r\n"
            assert ctl.ask('{"op": "uart_noise", "on": false}') == {"ok": True}
            # urc: the line, as given
            assert ctl.ask(examples["urc"]) == {"ok": True}
            assert host.seen(b'\r\n+QIURC: "x"\r\n')
            # dtr: taken (in command state a drop changes nothing the host sees)
            assert ctl.ask(examples["dtr"]) == {"ok": True}
            assert ctl.ask('{"op": "dtr", "level": 1}') == {"ok": True}
            assert host.at("AT") == OK
            # slow: the open's answer held 5 s
            assert ctl.ask(examples["slow"]) == {"ok": True}
            started = time.monotonic()
            _open_ssl_1(host)
            assert time.monotonic() - started >= 4.9
            assert ctl.ask('{"op": "slow", "command": "+QSSLOPEN", "ms": 0}') == {"ok": True}
            # net: taken, then put back
            assert ctl.ask(examples["net"]) == {"ok": True}
            assert ctl.ask('{"op": "net"}') == {"ok": True}
            # register 0: +CREG URC once AT+CREG=1, and the PDP context dropped
            assert host.at("AT+CREG=1") == OK
            assert ctl.ask(examples["register"]) == {"ok": True}
            assert host.seen(b"\r\n+CREG: 0\r\n")
            assert host.seen(b'+QIURC: "pdpdeact",1\r\n')
            # reboot: the start-up URCs
            assert ctl.ask(examples["reboot"]) == {"ok": True}
            assert host.seen(b"RDY\r\n", timeout=20)
        finally:
            host.close()
        rc = cli_support.stop(proc)
    finally:
        if ctl is not None:
            ctl.close()
        proc.kill()
        log.close()
    assert rc == 0, (tmp_path / "err").read_text()[-3000:]


# ----------------------------------------------------------------------------------------
# the command surface: every listed command answers its test form

def _surface_commands(profile: str) -> list[str]:
    section = README.split("<!-- command surface", 1)[1].split("<!-- end of command surface", 1)[0]
    part = section.split(f"**{profile}**", 1)[1]
    part = part.split("\n**", 1)[0]                       # up to the next profile's heading
    names = sorted(set(re.findall(r"`AT([+&][A-Z0-9]+|[A-Z])", part)))
    return ["S3" if n == "S" else n for n in names]       # (`ATS<n>=?`: a register's test form)


@pytest.mark.parametrize("profile", ["ec2x", "ml302"])
def test_every_command_of_the_surface_table_answers_its_test_form(tmp_path, profile):
    """README "Command surface per profile": "Every command also answers its test form `=?`.
    A command a profile does not list answers `ERROR`"."""
    readme_says("Every command also answers its test form `=?`. A command a profile does not list "
                "answers `ERROR`, as on a module without it.")
    names = _surface_commands(profile)
    assert len(names) > (80 if profile == "ec2x" else 40), names
    other = set(_surface_commands("ml302" if profile == "ec2x" else "ec2x")) - set(names)
    with BackgroundEmulator(offline=True) as emu:
        port = emu.add_modem(profile, state_dir=tmp_path / "st")
        host = new_host(emu, port)
        try:
            refused = {n: a for n in names if not (a := host.at(f"AT{n}=?")).endswith(b"OK\r\n")}
            assert refused == {}
            for name in sorted(other):                       # the other module's commands
                assert host.at(f"AT{name}=?") == b"\r\nERROR\r\n", name
                assert host.at(f"AT{name}") == b"\r\nERROR\r\n", name
        finally:
            host.close()


# ----------------------------------------------------------------------------------------
# refused input: one line, exit 2

@pytest.mark.parametrize("args", [
    ["--keylog", "{tmp}/no/dir/keys.log"],
    ["--keylog", "{tmp}"],
    ["--scenario", "{tmp}/missing.toml"],
    ["--profile", "{tmp}/missing.toml"],
    ["--config", "{tmp}/missing.toml"],
    ["--ping", "collector.example=fast"],
    ["--listen", "2020=10.0.0.1:40123"],
    ["--trace", "{tmp}"],
], ids=["keylog-no-dir", "keylog-dir", "scenario-missing", "profile-missing", "config-missing",
        "ping-not-ms", "listen-not-loopback", "trace-dir"])
def test_each_kind_of_refused_input_is_one_line_and_exit_2(tmp_path, args):
    """README "Running it yourself": "A refused argument or input file (option, `--config`,
    profile, scenario, `--trace` or `--keylog` path) is one line and exit 2" -- the kinds
    no other test pins to exit 2."""
    readme_says("A refused argument or input file (option, `--config`, profile, scenario, `--trace` or\n"
                "`--keylog` path) is one line and exit 2")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code, out, err = cli_support.refused("--offline", "--state-dir", str(tmp_path / "st"),
                                         "--link", str(tmp_path / "modem"), *args)
    assert (code, out) == (2, ""), (code, out, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert not os.path.lexists(tmp_path / "modem")


# ----------------------------------------------------------------------------------------
# scenario files: a bad file stops start-up

def _start_or_refusal(tmp_path: Path, *args: str) -> tuple[str, int, str]:
    """Start the CLI: (the device path if it came up -- then stopped by SIGTERM --, exit
    code, stderr)."""
    err_path = tmp_path / "start.err"
    with open(err_path, "w") as err:
        proc = cli_support.start("--offline", "--state-dir", str(tmp_path / "st"),
                                 "--link", str(tmp_path / "modem"), *args, stderr=err)
        try:
            line = proc.stdout.readline().strip()
            if line:
                cli_support.stop(proc)
            else:
                proc.wait(30)
        finally:
            proc.kill()
            proc.wait(10)
    return line, proc.returncode, err_path.read_text()


# Was a bug, fixed (Scenario.check now checks the op's profile-bound arguments too): a step whose
# operation can never run on the profile (slow of a command the EC2x lacks, send_fail on socket
# 12 of 0-11, pdp_deact of cid 99 of 1-16) started the modem and only logged a warning when
# the step's time came, where the README promises a refusal at start-up.
@pytest.mark.parametrize("step, key", [
    ('op = "slow"\ncommand = "+QSECWRITE"\nms = 100\n', "command"),
    ('op = "send_fail"\nsocket = 12\n', "socket"),
    ('op = "pdp_deact"\ncid = 99\n', "cid"),
], ids=["slow-of-an-ml302-command", "socket-12-of-an-ec2x", "cid-99"])
def test_a_scenario_step_the_profile_can_never_run_stops_start_up(tmp_path, step, key):
    """README "From a field log to a test": "A bad file stops start-up with one line naming
    the file, the step and the key."  The same request on the control socket is refused at
    once (`slow: '+QSECWRITE' is not a command of profile ec2x`, `'socket' must be an integer
    0..11`), and a trigger naming a command the profile lacks is refused at start-up."""
    readme_says("A bad file stops start-up with one line naming the file,\nthe step and the key.")
    scenario = tmp_path / "bad.toml"
    scenario.write_text("[[step]]\nat = 0.5\n" + step)
    line, code, err = _start_or_refusal(tmp_path, "--scenario", str(scenario))
    assert line == "" and code == 2, (line, code, err)
    assert len(err.strip().splitlines()) == 1, err
    assert "bad.toml" in err and "step 1" in err and f"key {key}" in err, err


def test_a_trigger_naming_a_command_the_profile_lacks_is_refused_at_start_up(tmp_path):
    """The counterpart that holds: `when = { command = "+QSECWRITE" }` on an EC2x is one line,
    exit 2, naming the file, the step and the key."""
    scenario = tmp_path / "bad.toml"
    scenario.write_text('[[step]]\nwhen = { command = "+QSECWRITE" }\nop = "state"\n')
    line, code, err = _start_or_refusal(tmp_path, "--scenario", str(scenario))
    assert (line, code) == ("", 2), err
    assert len(err.strip().splitlines()) == 1, err
    assert "bad.toml" in err and "step 1" in err and "key when.command" in err, err


# ----------------------------------------------------------------------------------------
# the state dir's inventory

def test_the_state_dir_holds_what_the_readme_lists_with_its_modes(tmp_path):
    """README "The state dir": `--state-dir` (created 0700) holds settings.json (0600),
    qgdcnt.json, nv.json (0600), ufs/ (0700) and ufs/<name> (0600) -- RAM: files live in
    memory only --, plus the `.lock` of "One emulator at a time" (an EC2x has no secstore/)."""
    readme_says("`nv.json` (0600): what the module keeps in NV by itself")
    readme_says("RAM: files live in memory only.")
    readme_says("(a lock, `<state-dir>/.lock`, dropped when the process\n  ends, kill -9 included)")
    link, state = tmp_path / "modem", tmp_path / "st"
    proc = cli_support.start("--offline", "--state-dir", str(state), "--link", str(link))
    try:
        assert proc.stdout.readline().strip() == str(link)
        host = Host(str(link))
        try:
            assert host.at("ATE0").endswith(b"OK\r\n")
            assert host.at("AT&W") == OK                        # settings.json
            assert host.at("AT+QGDCNT=1") == OK                 # qgdcnt.json
            assert host.at("AT+CTZU=3") == OK                   # nv.json
            assert host.upload("UFS:kept.txt", b"abc").endswith(b"OK\r\n")
            assert host.upload("RAM:gone.txt", b"xyz").endswith(b"OK\r\n")
        finally:
            host.close()
        assert (state / ".lock").is_file()
        assert cli_support.stop(proc) == 0
    finally:
        proc.kill()
    mode = lambda p: oct(os.stat(p).st_mode & 0o777)           # noqa: E731
    found = {str(p.relative_to(state)): mode(p) for p in state.rglob("*")}
    found.pop(".lock", None)                                   # (left or not: the lock is released)
    assert mode(state) == "0o700"
    assert found == {"settings.json": "0o600", "qgdcnt.json": found.get("qgdcnt.json"),
                     "nv.json": "0o600", "ufs": "0o700", "ufs/kept.txt": "0o600"}, found
    assert (state / "ufs" / "kept.txt").read_bytes() == b"abc"


# ----------------------------------------------------------------------------------------
# the demo peer's other services

def test_the_demo_plain_echo_is_udp_too_and_the_https_server_answers_the_ec2x(tmp_path):
    """README: "the TCP(IP) notes' example server 220.180.239.212:8009 is a plain TCP and UDP
    echo there"; "The manuals' example hosts (..., `www.iottest.work:443`) are routed to it"
    (an HTTPS server with the demo CA) -- tried from an EC2x, the TCP one being the README's
    own session."""
    readme_says("220.180.239.212:8009 is a\nplain TCP and UDP echo there")
    readme_says("a TLS echo service and an HTTPS server with their own\nthrow-away CA")
    with BackgroundEmulator(offline=True, demo=True) as emu:
        port = emu.add_modem("ec2x", state_dir=tmp_path / "st")
        host = new_host(emu, port)
        try:
            activate(host)
            assert host.at('AT+QIOPEN=1,2,"UDP","220.180.239.212",8009,0,0') == OK
            assert host.read_until(re.compile(rb"\+QIOPEN: 2,\d+\r\n")).endswith(b"+QIOPEN: 2,0\r\n")
            host.write(b"AT+QISEND=2,5\r")
            assert host.read_until(b"> ") == b"\r\n> "
            host.write(b"hello")
            assert host.read_until(b"SEND OK\r\n").endswith(b"\r\nSEND OK\r\n")
            assert host.seen(b'+QIURC: "recv",2\r\n', timeout=20)
            answer = host.at("AT+QIRD=2,1500")
            assert re.fullmatch(rb'\r\n\+QIRD: 5[^\r\n]*\r\nhello\r\n\r\nOK\r\n', answer), answer
            assert host.at("AT+QICLOSE=2") == OK
            # the HTTPS server, verified against the demo CA at seclevel 1
            assert host.at('AT+QSSLCFG="seclevel",1,1;+QSSLCFG="cacert",1,"UFS:demo-ca.pem"') == OK
            assert host.at('AT+QSSLOPEN=1,1,3,"www.iottest.work",443,0') == OK
            assert host.read_until(re.compile(rb"\+QSSLOPEN: 3,-?\d+\r\n"), timeout=20).endswith(b"+QSSLOPEN: 3,0\r\n")
            request = b"GET /test.html HTTP/1.1\r\nHost: www.iottest.work\r\n\r\n"
            assert host.send_data(3, request) == b"\r\nSEND OK\r\n"
            assert host.seen(b'+QSSLURC: "recv",3\r\n', timeout=20)
            page = host.at("AT+QSSLRECV=3,1500")
            assert page.startswith(b"\r\n+QSSLRECV: ") and b"HTTP/1.1 200 OK\r\n" in page, page
            assert b"Hello!This is an IOT test webpage!" in page, page
            assert host.at("AT+QSSLCLOSE=3") == OK
        finally:
            host.close()


# ----------------------------------------------------------------------------------------
# a parent that never reads stderr

def test_log_lines_past_10000_waiting_are_dropped_and_counted(tmp_path):
    """README "Running it yourself": hints and logs go to stderr "never in the loop's way: a
    parent that never reads stderr cannot stall the modems; past 10,000 waiting lines
    they are dropped and counted".  15,000 control requests (each one INFO line) while the
    stderr pipe is not read; then the modem still answers, and once stderr is read the lines
    written plus the count reported make up every line."""
    readme_says("past 10,000 waiting lines they are dropped and counted")
    total = 15_000
    link, ctl_path = tmp_path / "modem", tmp_path / "modem.ctl"
    proc = subprocess.Popen([PY, "-m", "emulator", "--offline", "--log-level", "INFO", "--control", str(ctl_path),
                             "--link", str(link), "--state-dir", str(tmp_path / "st")],
                            cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == str(link)
        ctl = _Control(ctl_path)
        try:
            request = b'{"op": "dtr", "level": 1}\n'
            sent = 0
            while sent < total:                                   # pipelined, 500 at a time
                batch = min(500, total - sent)
                ctl.sock.sendall(request * batch)
                got = 0
                while got < batch:
                    while b"\n" not in ctl.buf:
                        chunk = ctl.sock.recv(65536)
                        assert chunk, "the control socket closed"
                        ctl.buf += chunk
                    line, ctl.buf = ctl.buf.split(b"\n", 1)
                    assert json.loads(line) == {"ok": True}
                    got += 1
                sent += batch
        finally:
            ctl.close()
        host = Host(str(link))                                    # not stalled
        try:
            assert host.at("AT") == b"AT\r\r\nOK\r\n"
        finally:
            host.close()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0
    written = err.count("control: dtr {'level': 1}")
    counts = [int(n) for n in re.findall(r"modem-emulator: (\d+) log lines dropped \(stderr was not read\)", err)]
    assert counts, err[-2000:]
    # (the host's open and close after the flood log a line or two, dropped as well)
    assert total <= written + sum(counts) <= total + 3, (written, counts)
    assert written >= 10_000, written                            # the 10,000 that waited came out


# ----------------------------------------------------------------------------------------
# "names compared byte for byte"

def _verified_opens(tmp_path: Path, names: list[str]) -> dict[str, bytes]:
    """Each name (routed to one TLS server whose certificate is for www.iottest.work,
    localhost, ...) opened at seclevel 1 with the server's CA: name -> its +QSSLOPEN line."""
    pki = default_pki()
    results = {}
    with BackgroundEmulator(offline=True) as emu, TlsServer(pki.server, mode="echo") as server:
        for name in names:
            emu.router.add_map(name, 4443, "127.0.0.1", server.address[1])
        port = emu.add_modem("ec2x", state_dir=tmp_path / "st")
        host = new_host(emu, port)
        try:
            activate(host)
            assert host.upload("UFS:ca.pem", pki.ca.cert_pem).endswith(b"OK\r\n")
            assert host.at('AT+QSSLCFG="seclevel",1,1;+QSSLCFG="cacert",1,"UFS:ca.pem"') == OK
            for cid, name in enumerate(names):
                assert host.at(f'AT+QSSLOPEN=1,1,{cid},"{name}",4443,0') == OK
                results[name] = host.read_until(re.compile(rb"\+QSSLOPEN: %d,-?\d+\r\n" % cid), timeout=20)
        finally:
            host.close()
    return results


def test_the_server_name_check_ignores_ascii_case_as_mbed_tls_does(tmp_path):
    """docs/behaviour.md "Certificate checks": the dialled name is matched "as Mbed TLS 2.28
    does: SAN dNSName entries ..., ASCII case ignored, a trailing dot on either side a
    mismatch" -- what the module's Mbed TLS client does.  (The README said "names compared
    byte for byte" -- a DOCS finding of this file, fixed in the README.)"""
    readme_says("the dialled name against the certificate's with only ASCII case ignored")
    results = _verified_opens(tmp_path, ["localhost", "LOCALHOST", "WWW.IoTtest.Work", "www.iottest.work."])
    assert results["localhost"].endswith(b"+QSSLOPEN: 0,0\r\n"), results
    assert results["LOCALHOST"].endswith(b"+QSSLOPEN: 1,0\r\n"), results
    assert results["WWW.IoTtest.Work"].endswith(b"+QSSLOPEN: 2,0\r\n"), results
    assert not results["www.iottest.work."].endswith(b"+QSSLOPEN: 3,0\r\n"), results


# ----------------------------------------------------------------------------------------
# online mode's seal worker

def test_one_seal_worker_per_process_whatever_the_number_of_modems(tmp_path):
    """README "Transparent access mode": "A stream in online mode is encrypted on a worker
    thread (one per process, whatever the number of modems)" -- two emulators in one process,
    two modems each, all four streaming 16 KiB through the demo's echo in transparent mode."""
    readme_says("A stream in online mode is encrypted on a worker thread (one per process, whatever the number\nof modems)")
    import threading

    from emulator.io import offload
    if not offload.ENABLED:
        pytest.skip("MODEM_EMULATOR_OFFLOAD=0 in the environment")
    before = offload.WORKER.jobs_run
    data = bytes(range(256)) * 64                                       # 16 KiB
    with BackgroundEmulator(offline=True, demo=True) as one, BackgroundEmulator(offline=True, demo=True) as two:
        hosts = []
        try:
            for n, emu in enumerate((one, one, two, two)):
                port = emu.add_modem("ec2x", state_dir=tmp_path / f"st{n}")
                host = new_host(emu, port)
                hosts.append(host)
                activate(host)
                host.write(b'AT+QSSLOPEN=1,1,4,"220.180.239.212",8011,2\r')
                assert host.read_until(re.compile(rb"CONNECT\r\n|ERROR\r\n"), timeout=20) == b"\r\nCONNECT\r\n"
            for host in hosts:
                host.write(data)
            for host in hosts:
                assert host.read_exactly(len(data), timeout=60) == data
        finally:
            for host in hosts:
                host.close()
    workers = [t for t in threading.enumerate() if t.name == "tls-seal"]
    assert len(workers) == 1, workers
    assert offload.WORKER.jobs_run > before                             # the work went through it


# ----------------------------------------------------------------------------------------
# manual time and the clock

def _cclk(host: Host):
    import datetime
    m = re.fullmatch(rb'\r\n\+CCLK: "(\d\d/\d\d/\d\d,\d\d:\d\d:\d\d)([+-]\d+)"\r\n\r\nOK\r\n', host.at("AT+CCLK?"))
    assert m, "no +CCLK answer"
    return datetime.datetime.strptime(m.group(1).decode(), "%y/%m/%d,%H:%M:%S")


def test_manual_time_moves_the_timers_but_cclk_keeps_the_computers_time(tmp_path):
    """README "In Python, without pytest": `emu.advance(port, 30)  # manual_time: the modem's
    timers move only so (AT+CCLK keeps the computer's time)` -- two hours advanced do not move
    AT+CCLK, while a timer (the start-up URCs after AT+CFUN=1,1) waits for advance()."""
    readme_says("manual_time: the modem's timers move only so (AT+CCLK keeps the computer's time)")
    with BackgroundEmulator(offline=True) as emu:
        port = emu.add_modem("ec2x", state_dir=tmp_path / "st", manual_time=True)
        host = new_host(emu, port)
        try:
            first = _cclk(host)
            emu.advance(port, 2 * 3600)
            second = _cclk(host)
            assert abs((second - first).total_seconds()) < 300, (first, second)
            # a timer does move with advance(): the 600 ms boot URCs after AT+CFUN=1,1
            assert host.at("AT+CFUN=1,1") == OK
            assert host.quiet_for(0.5) == b""                 # nothing without advance()
            emu.advance(port, 1)
            assert host.seen(b"+QIND: SMS DONE\r\n")
        finally:
            host.close()
