"""Review of today's emulator changes (4c84666 f24d0b7 abe1b28 ee15a30 66b2ed8), third reviewer.

Problems found (all fixed since; each test says "Was a bug, fixed"):

* emulator/tools/cli.py `_stop_now`: 66b2ed8 notes a stop signal whose SystemExit a finalizer
  swallowed only for the entry point's early handler; main()'s own handler (prepare(): the
  profile, scenario, config, key log and trace files are read under it) raises _Stopped
  without noting it, so the same swallowed stop lets the start-up go on and the emulator runs;
* docs/behaviour.md (ML302 store) says the state dir gone is +CME ERROR: 23 "for AT+QSECWRITE
  / QSECREAD / QSECDEL alike": AT+QSECREAD of a stored slot answers 22 (slot empty) and
  AT+QSECDEL OK, while AT+QSECWRITE of the same "empty" slot answers 23 for good;
* secstore.py _DirectoryBlobs.get reads with Path.read_bytes: a FIFO at secstore/slotN.bin
  blocks the event loop (every modem of the process stops answering) until someone writes it;
* ssl_ec2x.py read_file_material swallows every FileError: a cacert file the drive cannot
  read (411, or 419 with ufs/ unmountable) is logged as "cacert file ... not found", where the
  ML302 (4c84666) says the slot cannot be read and why;
* docs/behaviour.md (file system) and vfs._MountedDrive's docstring say a state dir *gone* at
  the first file command makes UFS answer 419: the drive is made anew (mkdir parents=True);
* --demo on a store it cannot use (ee15a30): the start-up hint still says "its CA is uploaded
  as UFS:demo-ca.pem" right under the WARNING that it was not;
* ModemHandle.advance() without @pytest.mark.modem_manual_time: the RuntimeError tells a
  plugin user to call add_modem(..., manual_time=True), an API the fixture hides.

Risky paths checked and found right (passing): the unmounted UFS drive (419 before CONNECT, RAM
working, QFMOV RAM->UFS keeping its source, the mount retried once ufs/ is right again),
directories standing in the cert store (a key as a directory: 23 and nothing lost; a slot as
a directory: filled and damaged), remove_link with the link's directory gone, a stale
BackgroundEmulator/ModemHandle (running, path, trace_tail), and the plugin as a user project
runs it (positional tls_server mode, the mode twice refused, manual time with a TLS open and
advance(), a stale handle's .path).
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from emulator.io.app import BackgroundEmulator
from emulator.io.transport import make_link, remove_link
from emulator.testing.host import Host
from emulator.testing.peers import TlsServer
from tests.e2e.cli_support import ROOT, Cli, came_up_after_a_stop
from tests.e2e.socket_support import wait_for

OK = b"\r\nOK\r\n"
FINAL = re.compile(rb"\r\n(OK|ERROR|\+CME ERROR: \d+)\r\n")
CONNECT_OR_FINAL = re.compile(rb"\r\nCONNECT\r\n|" + FINAL.pattern)
PROMPT_OR_FINAL = re.compile(rb"\r\n> |" + FINAL.pattern)


# -- helpers ---------------------------------------------------------------------------------
def _host(emu: BackgroundEmulator, port) -> Host:
    host = Host(port.path)
    emu.run(port.port.look_for_host)
    assert host.at("ATE0").endswith(OK)
    return host


def _upload(host: Host, name: str, data: bytes) -> bytes:
    host.write(f'AT+QFUPL="{name}",{len(data)}\r'.encode())
    first = host.read_until(CONNECT_OR_FINAL)
    if not first.endswith(b"CONNECT\r\n"):
        return first
    host.write(data)
    return host.read_until(FINAL)


def _secwrite(host: Host, slot: int, data: bytes) -> bytes:
    host.write(f"AT+QSECWRITE={slot}\r".encode())
    first = host.read_until(PROMPT_OR_FINAL)
    if not first.endswith(b"> "):
        return first
    host.write(data + b"\x1a")
    return host.read_until(FINAL)


# == BUG 1: a swallowed stop under main()'s own handler ========================================
# The same simulation as test_review_today_2's "parsing" case (a finalizer swallowing the
# handler's exception), one step later: while prepare() reads the start-up files, the handler
# in place is cli._stop_now, which raises _Stopped and notes nothing.
_SWALLOWED_IN_PREPARE = r"""
import os, signal, sys
import emulator.__main__ as entry
import emulator.tools.cli as cli
sys.argv = ["modem-emulator", "--offline", "--state-dir", sys.argv[1], "--link", sys.argv[2]]
real = cli.prepare
def prepare(args):
    try:
        os.kill(os.getpid(), signal.SIGTERM)       # main()'s handler: _Stopped ...
    except Exception:
        pass                                       # ... swallowed (a finalizer would)
    return real(args)
cli.prepare = prepare
sys.exit(entry.run())
"""


# Was a bug, fixed: cli._stop_now noted nothing, so a _Stopped swallowed while prepare() read the
# files was lost (the emulator came up after the SIGTERM).  It notes the signal; run() ends at once.
def test_a_stop_swallowed_while_prepare_reads_the_files_still_ends_the_start_up(tmp_path):
    started, code, _ = came_up_after_a_stop(_SWALLOWED_IN_PREPARE, tmp_path)
    assert started == "", f"started on {started} after a SIGTERM during start-up"
    assert code == 0
    assert not os.path.lexists(tmp_path / "modem")


# == BUG 2: ML302, the state dir gone: QSECREAD 22 / QSECDEL OK, QSECWRITE 23 ==================
# Was a bug, fixed: with the state dir deleted while running, AT+QSECREAD of a stored slot said 22
# (empty) and AT+QSECDEL OK; a missing store directory is a host failure (23) now.
def test_ml302_state_dir_gone_is_a_memory_failure_for_read_and_delete_too(tmp_path):
    state = tmp_path / "st"
    with BackgroundEmulator(offline=True) as emu:
        port = emu.add_modem("ml302", state_dir=state)
        host = _host(emu, port)
        try:
            assert _secwrite(host, 0, b"stored").endswith(OK)
            shutil.rmtree(state)                          # a CI clean-up under the running modem
            write = _secwrite(host, 1, b"other")
            read = host.at("AT+QSECREAD=0")
            delete = host.at("AT+QSECDEL=0")
        finally:
            host.close()
    assert write == b"\r\n+CME ERROR: 23\r\n", write      # (as documented)
    assert (read, delete) == (b"\r\n+CME ERROR: 23\r\n", b"\r\n+CME ERROR: 23\r\n"), (read, delete)


# == BUG 3: a FIFO in the cert store hangs the loop =============================================
def _unblock_fifo(path: Path, timeout: float = 10) -> None:
    """Open the FIFO for writing and close it: a reader blocked in open() returns, reads EOF."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:                                   # (ENXIO: no reader yet)
            time.sleep(0.05)
            continue
        os.close(fd)
        return


# Was a bug, fixed: a FIFO in secstore/ was opened blocking, stopping the event loop (every modem
# of the process) until a writer came.  Slots are opened non-blocking; a FIFO is a damaged slot.
def test_a_fifo_in_the_cert_store_does_not_stop_the_modem(tmp_path):
    state = tmp_path / "st"
    (state / "secstore").mkdir(parents=True, mode=0o700)
    fifo = state / "secstore" / "slot0.bin"
    os.mkfifo(fifo)
    with BackgroundEmulator(offline=True) as emu:
        port = emu.add_modem("ml302", state_dir=state)
        host = _host(emu, port)
        answer = alive = None
        try:
            host.write(b"AT+QSECREAD=0\r")
            try:
                answer = host.read_until(FINAL, timeout=5)
                alive = host.at("AT")
            except AssertionError:
                pass
        finally:
            _unblock_fifo(fifo)                           # (let the loop go on, to stop cleanly)
            host.close()
    assert answer is not None, "no answer to AT+QSECREAD=0 in 5 s: the loop is blocked"
    assert alive == OK


# == BUG 4: EC2x, a CA file that cannot be read is "not found" ===================================
# Was a bug, fixed: a cacert the drive could not read (411) was logged 'not found'; the open's
# failure now says it cannot be read and why (the ML302's slots the same way).
def test_ec2x_open_with_an_unreadable_ca_file_says_why(tmp_path, pki, caplog):
    state = tmp_path / "st"
    with BackgroundEmulator(offline=True) as emu, TlsServer(pki.server, mode="echo") as server:
        emu.router.add_map("tls.example", 443, "127.0.0.1", server.address[1])
        port = emu.add_modem("ec2x", state_dir=state)
        host = _host(emu, port)
        try:
            assert _upload(host, "ca.pem", pki.ca.cert_pem).endswith(OK)
            assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
            assert host.at('AT+QSSLCFG="seclevel",1,1;+QSSLCFG="cacert",1,"UFS:ca.pem"') == OK
            ca = state / "ufs" / "ca.pem"
            ca.unlink()
            ca.mkdir()                                    # there, but it cannot be read (411)
            assert host.at('AT+QFDWL="ca.pem"') == b"\r\n+CME ERROR: 411\r\n"
            with caplog.at_level(logging.INFO, logger="emulator"):
                assert host.at('AT+QSSLOPEN=1,1,4,"tls.example",443,0') == OK
                line = host.read_until(re.compile(rb"\+QSSLOPEN: 4,\d+\r\n"), timeout=20)
        finally:
            host.close()
    assert line.endswith(b"+QSSLOPEN: 4,552\r\n"), line
    said = [r.getMessage() for r in caplog.records if "ca.pem" in r.getMessage() and "SSL open" in r.getMessage()]
    assert said, [r.getMessage() for r in caplog.records]
    assert not any("not found" in m for m in said) and any("Is a directory" in m for m in said), said


# == BUG 5: the docs' "state dir gone -> 419" ====================================================
def test_state_dir_gone_before_the_first_file_command_makes_a_fresh_drive(tmp_path):
    """What the code does: the UFS drive is made anew (mkdir parents=True) and works."""
    state = tmp_path / "st"
    with BackgroundEmulator(offline=True) as emu:
        port = emu.add_modem("ec2x", state_dir=state)
        host = _host(emu, port)
        try:
            shutil.rmtree(state, ignore_errors=True)
            assert host.at("AT+QFLST") == OK
            assert _upload(host, "x.bin", b"abc").endswith(OK)
        finally:
            host.close()
    assert (state / "ufs" / "x.bin").read_bytes() == b"abc"


# Was a doc bug, fixed: behaviour.md said a state dir gone gave 419; it is made anew.
def test_docs_do_not_promise_419_for_a_state_dir_gone():
    text = " ".join((ROOT / "docs" / "behaviour.md").read_text().split())
    assert "(the state dir gone or a file), each UFS operation answers 419" not in text


# == BUG 6: --demo's start-up hint after the demo material was not installed =====================
# Was a bug, fixed: --demo's start-up hint said the CA was uploaded after the upload had failed.
def test_demo_hint_does_not_claim_an_upload_that_failed(tmp_path):
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "ufs").write_text("not a directory\n")
    cli = Cli(tmp_path, "--demo")
    try:
        wait_for(lambda: "stop with Ctrl+C" in cli.log(), 20, "the start-up hints")
        # the warning is a log record, written by the CLI's stderr thread: it may come after the
        # hints, which are printed at once (it once had not come yet under CPU load)
        wait_for(lambda: "demo material is not installed" in cli.log(), 20, "the --demo warning")
        log = cli.log()
    finally:
        cli.stop()
    assert "demo material is not installed" in log, log[-3000:]
    assert "its CA is uploaded as UFS:demo-ca.pem" not in log, log[-3000:]


# == BUG 7: advance() without the marker names an API the plugin user does not call ==============
# Was a bug, fixed: modem.advance() without the marker named add_modem(manual_time=True), which a
# plugin user cannot call; it names @pytest.mark.modem_manual_time now.
def test_plugin_advance_without_the_marker_names_the_marker(modem):
    with pytest.raises(RuntimeError) as raised:
        modem.advance(1)
    assert "modem_manual_time" in str(raised.value), str(raised.value)


# == guards ===================================================================================
def test_unmounted_ufs_refuses_before_connect_keeps_ram_and_mounts_when_put_right(tmp_path):
    state = tmp_path / "st"
    state.mkdir()
    (state / "ufs").write_text("x")                        # the UFS drive cannot be read
    with BackgroundEmulator(offline=True) as emu:
        port = emu.add_modem("ec2x", state_dir=state)
        host = _host(emu, port)
        try:
            assert host.at("AT+QFLST") == b"\r\n+CME ERROR: 419\r\n"
            # refused before CONNECT: the data that follows is no upload (an AT line here)
            host.write(b'AT+QFUPL="u.bin",3\r')
            assert host.read_until(CONNECT_OR_FINAL) == b"\r\n+CME ERROR: 419\r\n"
            assert host.at("AT") == OK
            assert _upload(host, "RAM:r.bin", b"ram").endswith(OK)
            assert host.at('AT+QFMOV="RAM:r.bin","UFS:r.bin",0,1') == b"\r\n+CME ERROR: 419\r\n"
            assert host.at('AT+QFLST="RAM:*"') == b'\r\n+QFLST: "RAM:r.bin",3\r\n' + OK
            assert host.at('AT+QFDEL="*"') == b"\r\n+CME ERROR: 419\r\n"
            assert host.at('AT+QFOPEN="r.bin",0') == b"\r\n+CME ERROR: 419\r\n"
            (state / "ufs").unlink()
            (state / "ufs").mkdir()
            (state / "ufs" / "kept.bin").write_bytes(b"kept")
            (state / "ufs" / "..tmp-left").write_bytes(b"half")      # swept at the mount
            assert host.at('AT+QFMOV="RAM:r.bin","UFS:r.bin",0,1') == OK
            assert host.at("AT+QFLST") == (b'\r\n+QFLST: "kept.bin",4\r\n+QFLST: "r.bin",3\r\n' + OK)
            assert host.at('AT+QFLST="RAM:*"') == OK
        finally:
            host.close()
    assert sorted(p.name for p in (state / "ufs").iterdir()) == ["kept.bin", "r.bin"]


def test_cert_store_with_directories_in_place_of_the_key_and_a_slot(tmp_path):
    state = tmp_path / "st"
    with BackgroundEmulator(offline=True) as emu:
        port = emu.add_modem("ml302", state_dir=state)
        host = _host(emu, port)
        try:
            store = state / "secstore"
            store.mkdir(parents=True, exist_ok=True)
            (store / "device.key").mkdir()               # a damaged key that cannot be replaced
            assert _secwrite(host, 0, b"zero") == b"\r\n+CME ERROR: 23\r\n"
            assert host.at("AT+QSECREAD=0") == b"\r\n+CME ERROR: 22\r\n"       # still empty
            (store / "device.key").rmdir()
            assert _secwrite(host, 0, b"zero").endswith(OK)
            (store / "slot1.bin").mkdir()                # filled, and damaged
            assert host.at("AT+QSECREAD=1") == b"\r\n+QSECREAD: 0,0000\r\n" + OK
            assert _secwrite(host, 1, b"one") == b"\r\n+CME ERROR: 3\r\n"
            assert host.at("AT+QSECREAD=0").startswith(b"\r\n+QSECREAD: 1,")
        finally:
            host.close()


def test_remove_link_with_the_links_directory_gone_closes_the_lock(tmp_path):
    link = tmp_path / "d" / "modem"
    master, slave = os.openpty()
    try:
        fd = make_link(link, os.ttyname(slave))
        assert fd is not None
        shutil.rmtree(link.parent)                       # not made again
        remove_link(link, os.ttyname(slave), fd)         # no exception ...
        with pytest.raises(OSError):
            os.fstat(fd)                                 # ... and the lock's fd is closed
        assert not link.parent.exists()                  # (nothing made again)
    finally:
        os.close(master)
        os.close(slave)


def test_background_emulator_running_and_a_stale_handle(tmp_path):
    from emulator.testing.plugin import ModemHandle
    emu = BackgroundEmulator(offline=True)
    assert not emu.running
    emu.start()
    try:
        assert emu.running
        port = emu.add_modem("ec2x", trace=str(tmp_path / "t.trace"))
        handle = ModemHandle(emu, port, "ec2x", tmp_path / "t.trace", tmp_path / "state")
        assert handle.path == port.path
        host = _host(emu, port)
        host.close()
    finally:
        emu.stop()
    assert not emu.running
    with pytest.raises(RuntimeError, match="no longer it"):
        handle.path
    assert any("ATE0" in line for line in handle.trace_tail())   # the trace stays readable
    emu.stop()                                                   # (a second stop: nothing)


# The plugin as a user project runs it (outside this repository; one pytest child for all).
_USER_TESTS = '''
import re
import pytest
from emulator.testing.host import Host

KEPT = []

def _open(host, server):
    assert host.at("ATE0").endswith(b"OK\\r\\n")
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1').endswith(b"OK\\r\\n")
    host.write(b'AT+QFUPL="RAM:ca.pem",%d\\r' % len(server.ca_pem))
    host.read_until(b"CONNECT\\r\\n")
    host.write(server.ca_pem)
    host.read_until(b"OK\\r\\n")
    assert host.at('AT+QSSLCFG="seclevel",1,1;+QSSLCFG="cacert",1,"RAM:ca.pem"').endswith(b"OK\\r\\n")
    host.write(b'AT+QSSLOPEN=1,1,4,"%s",%d\\r' % (server.host.encode(), server.port))
    return host.read_until(re.compile(rb"\\+QSSLOPEN: 4,-?\\d+\\r\\n"), timeout=20)

@pytest.mark.tls_server("http", host="api.example.com", port=8443)
def test_positional_mode(modem, tls_server):
    assert tls_server.server.mode == "http" and (tls_server.host, tls_server.port) == ("api.example.com", 8443)
    host = Host(modem.path)
    try:
        assert _open(host, tls_server).endswith(b"+QSSLOPEN: 4,0\\r\\n")
    finally:
        host.close()

@pytest.mark.tls_server("http", mode="echo")
def test_mode_twice(modem, tls_server):
    pass

@pytest.mark.modem_manual_time
def test_manual_time(modem, tls_server):
    host = Host(modem.path)
    try:
        assert _open(host, tls_server).endswith(b"+QSSLOPEN: 4,0\\r\\n")
        host.write(b'AT+QFUPL="RAM:slow.bin",10,5\\r')
        host.read_until(b"CONNECT\\r\\n")
        host.write(b"abc")
        modem.emulator.wait_received(modem.port, host.written)
        assert modem.advance(6) >= 1
        assert host.read_until(b"OK\\r\\n", timeout=10).endswith(b"+QFUPL: 3,262\\r\\n\\r\\nOK\\r\\n")
    finally:
        host.close()
    KEPT.append(modem)

def test_stale_handle():
    (modem,) = KEPT
    with pytest.raises(RuntimeError, match="stopped"):
        modem.path
    with pytest.raises(RuntimeError, match="stopped"):
        modem.advance(1)
'''


def test_plugin_as_a_user_runs_it(tmp_path):
    project = tmp_path / "user"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\naddopts = --strict-markers\n")
    (project / "test_user.py").write_text(textwrap.dedent(_USER_TESTS))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHONPATH"))}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA",
                           f"--basetemp={project / 'tmp'}", "test_user.py"],
                          cwd=project, env=env, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert re.search(r"PASSED test_user.py::test_positional_mode", out), out[-4000:]
    assert re.search(r"PASSED test_user.py::test_manual_time", out), out[-4000:]
    assert re.search(r"PASSED test_user.py::test_stale_handle", out), out[-4000:]
    assert re.search(r"ERROR test_user.py::test_mode_twice", out), out[-4000:]
    assert re.search(r"ERROR at setup of test_mode_twice _+\n@pytest\.mark\.tls_server takes the mode "
                     r"alone positionally", out), out[-4000:]
    assert "3 passed, 1 error" in out, out[-4000:]
