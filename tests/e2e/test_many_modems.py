"""--count N: N independent modems in one process (issue 12, "Many modems")."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time

import pytest

from emulator.testing.host import Host
from emulator.testing.peers import TlsServer
from tests.e2e.cli_support import ROOT, refused, start, stop

HOST_NAME, HOST_PORT = "www.iottest.work", 443


def device_paths(proc, count: int) -> list[str]:
    paths = [proc.stdout.readline().strip() for _ in range(count)]
    if not all(paths):
        proc.kill()
        raise AssertionError(f"got {paths}; stderr: {proc.stderr.read()}")
    return paths


def test_count_3_prints_three_paths_and_each_modem_answers_alone(tmp_path):
    proc = start("--count", "3", "--state-dir", str(tmp_path / "s"),
                 "--link", str(tmp_path / "modem-{n}"))
    hosts = []
    try:
        paths = device_paths(proc, 3)
        assert paths == [str(tmp_path / f"modem-{n}") for n in range(3)]
        devices = {os.readlink(p) for p in paths}
        assert len(devices) == 3 and all(d.startswith("/dev/pts/") for d in devices)
        hosts = [Host(p) for p in paths]
        # echo off on modem 1 only: the others still echo
        assert hosts[1].at("ATE0") == b"ATE0\r\r\nOK\r\n"
        assert hosts[0].at("AT") == b"AT\r\r\nOK\r\n"
        assert hosts[1].at("AT") == b"\r\nOK\r\n"
        assert hosts[2].at("AT") == b"AT\r\r\nOK\r\n"
        # each has its own UFS: a file uploaded to modem 2 is not on modem 0
        assert hosts[2].upload("UFS:only-2.txt", b"two").startswith(b"\r\n+QFUPL: 3,")
        assert b"only-2.txt" in hosts[2].at('AT+QFLST="*"')
        assert b"only-2.txt" not in hosts[0].at('AT+QFLST="*"')
    finally:
        for host in hosts:
            host.close()
        assert stop(proc) == 0
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["0", "1", "2"]
    assert not any((tmp_path / f"modem-{n}").is_symlink() for n in range(3))


def test_count_with_a_link_without_n_stops_startup(tmp_path):
    proc = start("--count", "2", "--link", str(tmp_path / "modem"), "--state-dir", str(tmp_path / "s"))
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 2 and out == ""        # a refused argument
    assert "--link: with --count 2 the link must be a pattern with {n}" in err
    assert not (tmp_path / "modem").exists()


@pytest.mark.parametrize("value", ["0", "-1", "many"])
def test_count_must_be_positive(tmp_path, value):
    code, out, err = refused("--count", value, "--state-dir", str(tmp_path / "s"))
    assert code == 2 and out == ""
    assert "--count: expected a whole number of at least 1" in err


def tls_echo(path: str, ca_pem: bytes, message: bytes) -> bytes:
    """A host's whole session: PDP, CA upload, AT+QSSLOPEN in buffer mode, send, read back."""
    host = Host(path)
    try:
        assert host.at("ATE0").endswith(b"OK\r\n")
        assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
        assert host.upload("RAM:cacert.pem", ca_pem).startswith(b"\r\n+QFUPL: ")
        assert host.at('AT+QSSLCFG="seclevel",1,1;+QSSLCFG="cacert",1,"RAM:cacert.pem"') == b"\r\nOK\r\n"
        assert host.at(f'AT+QSSLOPEN=1,1,4,"{HOST_NAME}",{HOST_PORT},0') == b"\r\nOK\r\n"
        host.seen(b"\r\n+QSSLOPEN: 4,0\r\n")
        assert host.send_data(4, message) == b"\r\nSEND OK\r\n"
        host.seen(b'\r\n+QSSLURC: "recv",4\r\n')
        got = b""
        deadline = time.monotonic() + 10
        while len(got) < len(message) and time.monotonic() < deadline:
            answer = host.at("AT+QSSLRECV=4,1500")
            m = re.search(rb"\+QSSLRECV: (\d+)\r\n", answer)
            n = int(m.group(1))
            got += answer[m.end():m.end() + n]
        assert host.at("AT+QSSLCLOSE=4") == b"\r\nOK\r\n"
        return got
    finally:
        host.close()


def run_parallel_echo(tmp_path, pki, count: int) -> float:
    """`count` hosts, one thread each, on `count` modems of one process, all at once."""
    with TlsServer(pki.server, mode="echo") as server:
        proc = start("--count", str(count), "--state-dir", str(tmp_path / "s"), "--offline",
                     "--route", f"{HOST_NAME}:{HOST_PORT}=127.0.0.1:{server.port}")
        try:
            paths = device_paths(proc, count)
            results: dict[int, bytes | BaseException] = {}
            barrier = threading.Barrier(count)

            def one(n: int) -> None:
                try:
                    barrier.wait(10)
                    results[n] = tls_echo(paths[n], pki.ca.cert_pem, b"modem %d says hello" % n)
                except BaseException as exc:       # reported below, with its modem
                    results[n] = exc
            started = time.monotonic()
            threads = [threading.Thread(target=one, args=(n,)) for n in range(count)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            elapsed = time.monotonic() - started
        finally:
            assert stop(proc) == 0
        assert {n: r for n, r in results.items() if r != b"modem %d says hello" % n} == {}
        assert len(results) == count
        assert len(server.connections) == count
        return elapsed


def test_twenty_hosts_each_complete_a_tls_echo_at_once(tmp_path, pki):
    run_parallel_echo(tmp_path, pki, 20)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emulator", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=60)


def test_count_2_with_trace_writes_one_file_that_trace_show_and_replay_read(tmp_path):
    trace = tmp_path / "run.trace"
    proc = start("--count", "2", "--state-dir", str(tmp_path / "s"), "--trace", str(trace))
    try:
        paths = device_paths(proc, 2)
        for n, path in enumerate(paths):
            host = Host(path)
            assert host.at("ATE0").endswith(b"OK\r\n")
            assert host.at(f'AT+QICSGP=1,1,"APN{n}","","",1') == b"\r\nOK\r\n"
            assert host.at("AT+QICSGP=1") == b'\r\n+QICSGP: 1,"APN%d","","",1\r\n\r\nOK\r\n' % n
            host.close()
    finally:
        assert stop(proc) == 0
    assert (trace.stat().st_mode & 0o777) == 0o600
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    assert {r["modem"] for r in records if r["kind"] == "start"} == {0, 1}
    assert [r["line"] for r in records if r["kind"] == "cmd" and r["modem"] == 1] == \
        ["ATE0", 'AT+QICSGP=1,1,"APN1","","",1', "AT+QICSGP=1"]
    shown = run_cli("trace", "show", str(trace), "--modem", "1")
    assert shown.returncode == 0, shown.stderr
    assert '"APN1"' in shown.stdout and '"APN0"' not in shown.stdout
    replayed = run_cli("replay", str(trace), "--modem", "1")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    changed = tmp_path / "changed.trace"
    changed.write_text(trace.read_text().replace('"APN1\\"', '"APN9\\"', 1))
    assert run_cli("replay", str(changed), "--modem", "1").returncode == 1
    assert run_cli("trace").returncode == 2


def test_trace_to_an_unwritable_path_stops_startup(tmp_path):
    proc = start("--trace", str(tmp_path / "no-such-dir" / "t"), "--state-dir", str(tmp_path / "s"))
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 2 and out == ""       # a refused argument
    assert "modem-emulator: --trace" in err and "No such file or directory" in err


def control_request(sock_path, request: dict) -> dict:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(sock_path))
        sock.sendall(json.dumps(request).encode() + b"\n")
        return json.loads(sock.makefile("rb").readline())


def test_count_2_with_control_each_modem_answers_to_its_index(tmp_path):
    ctl = tmp_path / "modem.ctl"
    proc = start("--count", "2", "--state-dir", str(tmp_path / "s"), "--control", str(ctl))
    hosts = []
    try:
        hosts = [Host(p) for p in device_paths(proc, 2)]
        for host in hosts:
            assert host.at("ATE0").endswith(b"OK\r\n")
        assert (ctl.stat().st_mode & 0o777) == 0o600
        assert control_request(ctl, {"op": "urc", "modem": 1, "text": "+HELLO: 1"}) == {"ok": True}
        assert hosts[1].read_until(b"\r\n+HELLO: 1\r\n") == b"\r\n+HELLO: 1\r\n"
        assert control_request(ctl, {"op": "urc", "text": "+HELLO: 0"}) == {"ok": True}
        assert hosts[0].read_until(b"\r\n+HELLO: 0\r\n") == b"\r\n+HELLO: 0\r\n"
        assert hosts[1].quiet_for(0.2) == b""
        answer = control_request(ctl, {"op": "state", "modem": 2})
        assert answer["ok"] is False and "no modem 2" in answer["error"]
    finally:
        for host in hosts:
            host.close()
        assert stop(proc) == 0
    assert not ctl.exists()
