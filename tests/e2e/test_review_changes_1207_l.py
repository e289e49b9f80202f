"""Review of 7559229 (parser._stray skips spaces: "ATS7=5 <NUL>" is malformed), e1f7bd6
(cli.check_distinct_paths; replay's --modem defaulting to the trace's first modem; a stop-less
trace ending on a record the modem answers at once replays as a prefix; --max-gap '') and f1e480a
(the client certificate file read by verify._ca_walk).

Bugs found, fixed (were strict xfails; parser._split_number reads any run of spaces;
cli.check_distinct_paths keys by resolved path, a --link's symlink target and the inode, reads
$SSLKEYLOGFILE, and lets only /dev/null be shared):
- parser._split_number looks 16 characters ahead only: "ATS7=5" + 16 spaces + "3" runs S7=5 and
  then ERROR, where up to 15 spaces (and, since 7559229, any number before a stray byte) make
  the command malformed so that it runs nothing.
In emulator/tools/cli.py check_distinct_paths:
- `--link L --trace L` with L a symlink to the user's file X: X is truncated and overwritten
  with a trace record, then --link refuses (exit 1) -- the very case e1f7bd6 fixed, through a
  symlink (README: "through a symlink too"); L dangling: its target is created.  --link is keyed
  by the link's own name, --trace by realpath (the symlink's target): never equal.
- $SSLKEYLOGFILE naming the --trace file is not refused (the check looks at args.keylog only,
  make_keylog falls back to the variable): the key log and the trace share one file.
- a key log that is a hard link of the trace (same inode, other name) is not refused.
- `--link L --keylog L` where L is the link of an emulator that died and its pty number is now
  another program's terminal: the character-device skip lets both through, the link is taken
  over (README) and the key log is opened on that program's terminal (TLS secrets written there).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emulator.testing.peers import ServerIdentity, TlsServer
from tests.e2e import replay_support as rs
from tests.e2e.ssl_options_support import cfg, close, open_ssl, trust
from tests.e2e.test_adversarial_cert_material import build, der, mat, route  # noqa: F401 (fixtures)
from tests.e2e.test_adversarial_field_tools_11 import _start_refused

ROOT = Path(__file__).resolve().parents[2]
OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"


# == (1) 7559229: spaces then a stray byte after a basic command ====================================
_TOKENS = [["S0=3", "S7=45"], ["V1", "S7=50", "Q0"], ["S7=55", "S3?", "S0=2"], ["X4", "S7=65", "S0=4"],
           ["S7=70", "S0=5=?"]]
_STRAYS = ["\x00", "\t", "\x7f", "\xff", "\x1b"]


def _state(host) -> bytes:
    return host.at("ATS0?;S7?")


def _reset(host) -> None:
    assert host.at("ATS0=0;S7=60;V1;Q0") == OK


def test_stray_bytes_after_spaces_at_every_position_act_as_without_the_spaces(ec2x):
    """V.250 5.1: spaces are ignored -- "S0=3 <b> S7=45" is "S0=3<b>S7=45": the same answer and
    the same registers afterwards, for a stray control / 0x7F / 0xFF byte at every position."""
    host = ec2x
    seen = set()
    for k, tokens in enumerate(_TOKENS):
        stray = _STRAYS[k % len(_STRAYS)]
        for pos in range(len(tokens) + 1):
            parts = tokens[:pos] + [stray] + tokens[pos:]
            results = []
            for line in ("".join(parts), "  ".join(parts) + " "):
                _reset(host)
                answer = host.at("AT" + line)
                results.append((answer, _state(host)))
            assert results[0] == results[1], (parts, results)
            seen.add(results[0][0].endswith(ERROR))
    assert seen == {True}, seen                   # (every one of them is an error)


@pytest.mark.parametrize("line", ["ATS7=5 \x00", "ATS7=5   \t", "ATS7=5 \xff ", "ATS7? \x00",
                                  "ATS7=? \x1b", "ATE0 \x00", "ATQ0 \x7f"])
def test_a_stray_byte_after_spaces_runs_nothing_and_a_slash_repeats_the_error(ec2x, line):
    host = ec2x
    assert host.at("ATS7=60") == OK
    assert host.at(line) == ERROR
    host.write(b"A/")                             # (the line again: an error again)
    assert host.read_until(ERROR) == ERROR
    assert host.at("ATS7?") == b"\r\n060\r\n" + OK


@pytest.mark.parametrize("spaces", [1, 15, 16, 40])
def test_a_space_run_inside_a_number_runs_nothing_whatever_its_length(ec2x, spaces):
    host = ec2x
    assert host.at("ATS7=60") == OK
    assert host.at("ATS7=5" + " " * spaces + "3") == ERROR
    assert host.at("ATS7?") == b"\r\n060\r\n" + OK


def test_spaces_between_basic_commands_with_echo_on_are_echoed_and_run(open_modem):
    host, _ = open_modem("ec2x", echo=True)
    assert host.at("ATE1 V1 Q0 S7=33 ") == b"ATE1 V1 Q0 S7=33 \r" + OK
    assert host.at("AT S0=1 S7=34 ?") == b"AT S0=1 S7=34 ?\r" + ERROR
    # printable after the spaces is the next command, not a stray byte
    assert host.at("ATS7=35 X4") == b"ATS7=35 X4\r" + OK
    assert host.at("ATS7?") == b"ATS7?\r\r\n035\r\n" + OK
    assert host.at("ATS7=36 \x00") == b"ATS7=36 \x00\r" + ERROR
    assert host.at("ATS7?") == b"ATS7?\r\r\n035\r\n" + OK


def test_spaces_then_a_stray_byte_after_an_extended_command_is_an_error(ec2x):
    host = ec2x
    assert host.at("AT+CMEE=0") == OK
    for line in ("AT+CMEE=2 \x00", "AT+CMEE? \t", "AT+CGMM \x1b", "AT+CMEE=? \xff"):
        assert host.at(line) == ERROR, line
    assert host.at("AT+CMEE?") == b"\r\n+CMEE: 0\r\n" + OK


# == (2) e1f7bd6: two file options naming one file ====================================================
def _start(tmp_path: Path, *args: str, env=None):
    err = tmp_path / "start.err"
    proc = subprocess.Popen([sys.executable, "-m", "emulator", "--offline", "--state-dir", str(tmp_path / "st"),
                             *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=open(err, "w"), text=True,
                            env=env)
    line = proc.stdout.readline().strip()
    if line:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        return None, err.read_text()
    return proc.wait(timeout=10), err.read_text()


def test_dot_slash_and_bare_names_of_one_file_are_refused(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "emulator", "--offline", "--state-dir", "st",
                           "--trace", "./x", "--keylog", "x", "--link", "m0"], cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=20)
    assert proc.returncode == 2 and "same file" in proc.stderr, proc.stderr
    assert not (tmp_path / "x").exists()


def test_a_count_link_pattern_meeting_the_trace_at_one_n_is_refused_making_nothing(tmp_path):
    code, err = _start(tmp_path, "--count", "3", "--link", str(tmp_path / "m{n}"), "--trace", str(tmp_path / "m1"))
    assert code == 2 and "same file" in err and "Traceback" not in err, (code, err)
    assert not any(tmp_path.glob("m*")), list(tmp_path.iterdir())


def test_a_link_not_yet_made_and_the_key_log_on_it_are_refused_making_nothing(tmp_path):
    sub = tmp_path / "d"
    sub.mkdir()
    alias = tmp_path / "alias"
    alias.symlink_to(sub)                                # (a symlinked directory)
    code, err = _start(tmp_path, "--link", str(alias / "m"), "--keylog", str(sub / "m"))
    assert code == 2 and "same file" in err, (code, err)
    assert not (sub / "m").exists()


def test_a_trace_path_that_is_a_directory_is_one_refusal(tmp_path):
    code, err = _start(tmp_path, "--trace", str(tmp_path), "--link", str(tmp_path / "m0"))
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, (code, err)


@pytest.mark.parametrize("target", ["user_file", "dangling"])
def test_a_link_and_a_trace_on_one_symlink_are_refused_and_its_target_kept(tmp_path, target):
    x, link = tmp_path / "X", tmp_path / "L"
    if target == "user_file":
        x.write_bytes(b"precious\n")
    link.symlink_to(x)
    code, err = _start(tmp_path, "--link", str(link), "--trace", str(link))
    assert (x.read_bytes() if x.exists() else None) == (b"precious\n" if target == "user_file" else None)
    assert code == 2 and "same file" in err, (code, err)


def test_sslkeylogfile_naming_the_trace_is_refused(tmp_path):
    k = tmp_path / "k"
    code, err = _start(tmp_path, "--trace", str(k), "--link", str(tmp_path / "m0"),
                       env=dict(os.environ, SSLKEYLOGFILE=str(k)))
    assert code == 2 and "same file" in err, (code, err)


def test_a_key_log_hard_linked_to_the_trace_is_refused(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"")
    os.link(a, b)
    code, err = _start(tmp_path, "--trace", str(a), "--keylog", str(b), "--link", str(tmp_path / "m0"))
    assert code == 2 and "same file" in err, (code, err)


def test_link_and_keylog_on_a_taken_over_link_do_not_write_into_another_programs_terminal(tmp_path):
    """README: the link of an emulator that died is taken over, whatever program has its pty
    number now.  Named as --keylog too, the key log must not be that program's terminal."""
    master, slave = os.openpty()
    try:
        tty = os.ttyname(slave)
        link = tmp_path / "L"
        link.symlink_to(tty)
        dead = subprocess.Popen(["true"])
        dead.wait()
        (tmp_path / ".L.lock").write_text(f"{dead.pid}\n")        # (its emulator died: kill -9)
        proc = subprocess.Popen([sys.executable, "-m", "emulator", "--offline", "--state-dir",
                                 str(tmp_path / "st"), "--link", str(link), "--keylog", str(link)],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            started = proc.stdout.readline().strip()
            held = []
            if started:
                fd_dir = Path(f"/proc/{proc.pid}/fd")
                held = [os.readlink(fd_dir / f) for f in os.listdir(fd_dir) if (fd_dir / f).is_symlink()]
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)
        assert tty not in held, (tty, held)
        assert not started and proc.returncode == 2, (started, proc.returncode)
    finally:
        os.close(master)
        os.close(slave)


def test_dev_stdout_as_trace_and_key_log_with_stdout_a_file_is_refused(tmp_path):
    """/dev/stdout is no character device when stdout is a file: both options would write into
    that one file (the trace truncating it) -- a clash."""
    out = tmp_path / "out"
    with open(out, "w") as f:
        proc = subprocess.run([sys.executable, "-m", "emulator", "--offline", "--state-dir", str(tmp_path / "st"),
                               "--trace", "/dev/stdout", "--keylog", "/dev/stdout", "--link", str(tmp_path / "m0")],
                              cwd=ROOT, stdout=f, stderr=subprocess.PIPE, text=True, timeout=20)
    assert proc.returncode == 2 and "same file" in proc.stderr, proc.stderr


# == (3) e1f7bd6: replay --modem default, stop-less traces, --max-gap '' ==============================
@pytest.fixture
def small_trace(open_modem, emulator, tmp_path):
    host, _ = open_modem("ec2x", trace=str(tmp_path / "t.trace"))
    assert host.at("AT+CGMM") == b"\r\nEC25\r\n" + OK
    rs.flush(emulator)
    return rs.records(tmp_path / "t.trace")


def test_a_trace_of_modems_2_and_5_replays_modem_2_and_says_so(small_trace, tmp_path, capsys):
    recs = [dict(r, modem=2) for r in small_trace] + [dict(r, modem=5) for r in small_trace]
    path = rs.save(tmp_path, "m25.trace", recs)
    code, out = rs.replay(capsys, path)
    assert code == 0 and "holds 2 modems (2, 5): replaying modem 2" in out, out
    rs.replays(capsys, path, "--modem", "5")
    code, out = rs.replay(capsys, path, "--modem", "0")
    assert code != 0 and "Traceback" not in out, out


@pytest.mark.parametrize("modem", ["1", 1.0, True, None])
def test_a_modem_field_that_is_no_index_is_a_damaged_record(small_trace, tmp_path, capsys, modem):
    path = rs.save(tmp_path, "bad.trace", [dict(r, modem=modem) for r in small_trace])
    code, out = rs.replay(capsys, path)
    assert code == 2 and "not an index" in out, out


def test_max_gap_empty_names_the_option(small_trace, tmp_path, capsys):
    path = rs.save(tmp_path, "t.trace", small_trace)
    with pytest.raises(SystemExit) as exc:
        rs.replay(capsys, path, "--max-gap", "")
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--max-gap" in err and "number of seconds" in err and "_seconds" not in err, err


@pytest.fixture
def send_trace(emulator, open_modem, tcp_echo, tmp_path):
    from tests.e2e.socket_support import qiopen, qisend
    host, _ = open_modem("ec2x", trace=str(tmp_path / "s.trace"))
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
    qiopen(host, 0)
    assert qisend(host, 0, b"hello") == b"\r\nSEND OK\r\n"
    host.read_until(b'"recv",0\r\n')
    rs.flush(emulator)
    return rs.records(tmp_path / "s.trace")


def test_a_stop_less_trace_cut_after_sent_still_reports_wrong_sent_bytes(send_trace, tmp_path, capsys):
    i = next(k for k, r in enumerate(send_trace) if r["kind"] == "sent")
    cut = [dict(r) for r in send_trace[:i + 1]]
    rs.replays(capsys, rs.save(tmp_path, "cut.trace", cut), "--max-gap", "0.05")
    cut[-1]["data"] = "HELLO"
    code, out = rs.replay(capsys, rs.save(tmp_path, "cut2.trace", cut), "--max-gap", "0.05")
    assert code == 1 and "recorded 'HELLO'" in out, out


def test_a_stop_less_trace_ending_on_an_answer_is_compared_in_full(send_trace, tmp_path, capsys):
    """No stop record: ending on the recv URC (an answer) or on the 'received' before it (the
    prefix rule) both replay clean; so does ending before the 'received' (the stand-in sends
    only what was recorded, so the replay writes no URC either)."""
    recs = [r for r in send_trace if r["kind"] != "stop"]
    j = next(k for k, r in enumerate(recs) if r["kind"] == "received")
    rs.replays(capsys, rs.save(tmp_path, "full.trace", recs), "--max-gap", "0.05")
    rs.replays(capsys, rs.save(tmp_path, "recv.trace", recs[:j + 1]), "--max-gap", "0.05")
    rs.replays(capsys, rs.save(tmp_path, "ans.trace", recs[:j]), "--max-gap", "0.05")
    # the URC's output edited: inside the recording, a difference even with no stop record
    recs[j + 1] = dict(recs[j + 1], data=recs[j + 1]["data"].replace("recv", "RECV"))
    code, out = rs.replay(capsys, rs.save(tmp_path, "edited.trace", recs[:j + 2]), "--max-gap", "0.05")
    assert code == 1 and "RECV" in out, out


# == (4) f1e480a: a client chain at seclevel 2, the server requiring a client certificate =============
@pytest.fixture
def modem(ec2x_strict):
    return ec2x_strict[0]


@pytest.mark.parametrize("shape", ["leaf_then_inter", "key_first_then_chain", "blank_lines_in_base64",
                                   "der_leaf_alone_with_inter_unneeded"])
def test_a_client_chain_reaches_a_server_that_trusts_only_the_root(modem, route, mat, shape):
    leaf = build("chain-client", mat["inter"])
    body = leaf.cert_pem.split(b"\n")
    blanky = b"\n".join(body[:3] + [b""] + body[3:])
    files = {
        "leaf_then_inter": leaf.cert_pem + mat["inter"].cert_pem,
        "key_first_then_chain": leaf.key_pem + leaf.cert_pem + mat["inter"].cert_pem,
        "blank_lines_in_base64": blanky + mat["inter"].cert_pem,
        "der_leaf_alone_with_inter_unneeded": der(leaf) + b"trailing bytes after the SEQUENCE",
    }
    assert modem.upload("UFS:cc.pem", files[shape]).endswith(OK)
    assert modem.upload("UFS:cc.key", leaf.key_pem).endswith(OK)
    cfg(modem, "clientcert", 0, '"UFS:cc.pem"')
    cfg(modem, "clientkey", 0, '"UFS:cc.key"')
    # the server trusts the intermediate too only for the DER case (one certificate, no chain)
    client_ca = mat["root"].cert_pem + (mat["inter"].cert_pem if shape.startswith("der") else b"")
    with TlsServer(ServerIdentity(mat["leaf"], mat["inter"]), client_ca=client_ca,
                   require_client_cert=True) as server:
        route(server)
        trust(modem, 0, mat["root"].cert_pem, name="UFS:matroot.pem", seclevel=2)
        assert open_ssl(modem, 0, 0) == 0
        close(modem, 0)
        assert server.conn.client_cert_der == der(leaf)


def test_a_client_chain_whose_second_certificate_is_broken_is_552(modem, route, mat):
    leaf = build("chain-client-2", mat["inter"])
    broken = mat["inter"].cert_pem.replace(b"\n", b"\n@", 2)
    assert modem.upload("UFS:cb.pem", leaf.cert_pem + broken).endswith(OK)
    assert modem.upload("UFS:cb.key", leaf.key_pem).endswith(OK)
    cfg(modem, "clientcert", 0, '"UFS:cb.pem"')
    cfg(modem, "clientkey", 0, '"UFS:cb.key"')
    with TlsServer(ServerIdentity(mat["leaf"], mat["inter"]), client_ca=mat["root"].cert_pem,
                   require_client_cert=True) as server:
        route(server)
        trust(modem, 0, mat["root"].cert_pem, name="UFS:matroot.pem", seclevel=2)
        assert open_ssl(modem, 0, 0) == 552
        assert all(c.client_hello is None for c in server.connections)
