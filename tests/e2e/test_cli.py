"""The modem-emulator command line, started as a user starts it."""
from __future__ import annotations

import os
import signal
import sys
import time

import ptyprocess
import pytest

from emulator.testing.host import Host
from tests.e2e.cli_support import ROOT, first_line, start, stop

def test_ec2x_with_link_answers_the_manual_pdp_sequence(tmp_path):
    link = tmp_path / "x"
    proc = start("--profile", "ec2x", "--link", str(link), "--state-dir", str(tmp_path / "s"))
    try:
        assert first_line(proc) == str(link)
        assert os.readlink(link).startswith("/dev/pts/")
        host = Host(str(link))
        assert host.at('AT+QICSGP=1,1,"UNINET","","",1') == b'AT+QICSGP=1,1,"UNINET","","",1\r\r\nOK\r\n'
        assert host.at("AT+QIACT=1") == b"AT+QIACT=1\r\r\nOK\r\n"
        assert host.at("AT+QIACT?") == b'AT+QIACT?\r\r\n+QIACT: 1,1,1,"10.7.157.1"\r\n\r\nOK\r\n'
        assert host.at("AT+QIDEACT=1") == b"AT+QIDEACT=1\r\r\nOK\r\n"
        host.close()
    finally:
        assert stop(proc) == 0
    assert not link.exists() and not link.is_symlink()


def test_ml302_answers_the_manual_pdp_sequence(tmp_path):
    proc = start("--profile", "ml302", "--state-dir", str(tmp_path / "s"))
    try:
        path = first_line(proc)
        assert path.startswith("/dev/pts/")
        host = Host(path)
        host.at("ATE0")
        assert host.at('AT+CGDCONT=1,"IP","CMNET"') == b"\r\nOK\r\n"
        assert host.at("AT+CGACT=1,1") == b"\r\n+CGACT: 1, 1, 10.127.79.43\r\n\r\nOK\r\n"
        host.close()
    finally:
        assert stop(proc, signal.SIGINT) == 0


def test_bad_profile_stops_startup_with_one_message(tmp_path):
    bad = tmp_path / "my.toml"
    text = (ROOT / "profiles" / "ec2x.toml").read_text().replace("sockets = 12", 'sockets = "twelve"')
    bad.write_text(text)
    proc = start("--profile", str(bad), "--state-dir", str(tmp_path / "s"))
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert out == ""
    assert err.strip().splitlines() == [
        f"modem-emulator: profile {bad}: key ssl.sockets: must be an integer, got 'twelve'"]


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("[identity]", "[identity]\ncolour = 1"), "key identity.colour: unknown key"),
    (lambda t: t.replace('model = "EC25"\n', ""), "key identity.model: missing"),
    (lambda t: t + "\n[[oops", "not valid TOML"),
])
def test_profile_errors_name_the_key(tmp_path, edit, message):
    from emulator.modem.profile import ProfileError, load_profile
    bad = tmp_path / "p.toml"
    bad.write_text(edit((ROOT / "profiles" / "ec2x.toml").read_text()))
    with pytest.raises(ProfileError) as info:
        load_profile(str(bad))
    assert str(bad) in str(info.value) and message in str(info.value)


def test_copied_profile_is_used(tmp_path):
    mine = tmp_path / "mine.toml"
    mine.write_text((ROOT / "profiles" / "ec2x.toml").read_text().replace('model = "EC25"', 'model = "EG95"'))
    proc = start("--profile", str(mine), "--state-dir", str(tmp_path / "s"))
    try:
        host = Host(first_line(proc))
        assert host.at("AT+CGMM") == b"AT+CGMM\r\r\nEG95\r\n\r\nOK\r\n"
        host.close()
    finally:
        stop(proc)


def test_link_never_overwrites_a_foreign_path(tmp_path):
    victim = tmp_path / "file"
    victim.write_text("keep me")
    proc = start("--link", str(victim), "--state-dir", str(tmp_path / "s"))
    out, err = proc.communicate(timeout=20)
    assert proc.returncode != 0 and "not replacing" in err
    assert victim.read_text() == "keep me"


def test_stale_link_is_replaced(tmp_path):
    link = tmp_path / "dev"
    os.symlink("/dev/pts/99999", link)
    proc = start("--link", str(link), "--state-dir", str(tmp_path / "s"))
    try:
        assert first_line(proc) == str(link)
        assert os.path.exists(os.readlink(link))
    finally:
        stop(proc)


def test_cli_in_a_terminal_prints_hints_and_stops_on_ctrl_c(tmp_path):
    term = ptyprocess.PtyProcessUnicode.spawn(
        [sys.executable, "-m", "emulator", "--state-dir", str(tmp_path / "s")], cwd=str(ROOT))
    try:
        seen = ""
        deadline = time.monotonic() + 20
        while "Ctrl+C" not in seen and time.monotonic() < deadline:
            seen += term.read(4096)
        assert seen.splitlines()[0].strip().startswith("/dev/pts/")
        assert "python -m serial.tools.miniterm" in seen
        term.sendintr()
        deadline = time.monotonic() + 10
        while term.isalive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not term.isalive() and term.exitstatus == 0
    finally:
        if term.isalive():
            term.terminate(force=True)


def test_demo_answers_the_notes_example_out_of_the_box(tmp_path):
    """`modem-emulator --demo` (what `make run` starts): the manual's hosts reach the
    built-in peer, whose CA is already in UFS:demo-ca.pem."""
    proc = start("--demo", "--offline", "--state-dir", str(tmp_path / "s"))
    try:
        host = Host(first_line(proc))
        assert host.at("ATE0;+QIACT=1") == b"ATE0;+QIACT=1\r\r\nOK\r\n"
        assert host.at('AT+QSSLCFG="seclevel",1,1;+QSSLCFG="cacert",1,"UFS:demo-ca.pem"') == b"\r\nOK\r\n"
        assert host.at('AT+QSSLOPEN=1,1,4,"220.180.239.212",8010,0') == b"\r\nOK\r\n"
        assert host.seen(b"\r\n+QSSLOPEN: 4,0\r\n", 15)
        assert host.send_data(4, b"Test data from SSL") == b"\r\nSEND OK\r\n"
        host.seen(b'\r\n+QSSLURC: "recv",4\r\n')
        assert host.at("AT+QSSLRECV=4,1500") == b"\r\n+QSSLRECV: 18\r\nTest data from SSL\r\n\r\nOK\r\n"
        assert host.at("AT+QSSLCLOSE=4") == b"\r\nOK\r\n"
        # the TCP(IP) notes' example server: a plain echo, TCP and UDP
        for kind, cid in (("TCP", 0), ("UDP", 1)):
            assert host.at(f'AT+QIOPEN=1,{cid},"{kind}","220.180.239.212",8009,0,0') == b"\r\nOK\r\n"
            assert host.seen(f"\r\n+QIOPEN: {cid},0\r\n".encode(), 15)
            host.write(f"AT+QISEND={cid},5\r")
            host.read_until(b"> ")
            host.write(b"hello")
            assert host.read_until(b"SEND OK\r\n") == b"\r\nSEND OK\r\n"
            host.seen(f'\r\n+QIURC: "recv",{cid}\r\n'.encode())
            assert host.at(f"AT+QIRD={cid}") == b"\r\n+QIRD: 5\r\nhello\r\n\r\nOK\r\n"
            assert host.at(f"AT+QICLOSE={cid}") == b"\r\nOK\r\n"
        host.close()
    finally:
        assert stop(proc) == 0


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace('"+QSSLCFG" = "quectel"', '"+QSSLCFG" = "ec9x"'),
     "key commands.\"+QSSLCFG\": unknown variant 'ec9x' (known: onemo, quectel)"),
    (lambda t: t + '"+QNOSUCH" = "*"\n', 'key commands."+QNOSUCH": no such command in the emulator'),
])
def test_profile_command_table_is_checked(tmp_path, edit, message):
    from emulator.modem.profile import ProfileError, load_profile
    bad = tmp_path / "p.toml"
    bad.write_text(edit((ROOT / "profiles" / "ec2x.toml").read_text()))
    with pytest.raises(ProfileError) as info:
        load_profile(str(bad))
    assert str(info.value) == f"profile {bad}: {message}"


@pytest.mark.parametrize("args, message", [
    (["--state-dir", "/proc/nope/state"], "modem-emulator: cannot start: /proc/nope"),
    (["--keylog", "/proc/nope/keys.log"], "modem-emulator: key log /proc/nope/keys.log:"),
])
def test_unusable_paths_stop_startup_with_one_line(tmp_path, args, message):
    if "--state-dir" not in args:
        args = args + ["--state-dir", str(tmp_path / "s")]
    proc = start(*args)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode != 0 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith(message), err
