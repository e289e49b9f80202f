"""Review of 46de052 (EscapeDetector._within; cli.check_distinct_paths / _file_keys: a --link's
directory resolved as the kernel walks it, the lock files of a --link and a state dir taken, a NUL
refused) and 16c2656 (profile._wire refuses a whole line that reads as a final result code,
[commands] names ASCII, read_limited 64 MiB for profile / --config / --scenario, UTF-8 with
universal newlines for --config / scenario, add_modem takes a pathlib.Path).

Bugs found, fixed (were strict xfails; cli.check_distinct_paths refuses a --link naming no
file and counts the state dir itself; profile._line refuses a V0 digit as a whole line; a NUL
in a --config / --scenario path is shown as \\0):
- `--link /` (`.`, `./`): ValueError traceback from transport.link_lock_path (Path('/').with_name), now
  reached from cli.check_distinct_paths before any other check.
- `--link x/..` (x missing): x is created (make_link's parent mkdir) and the state dir locked,
  then exit 1 "exists and is not a link" -- a name whose last part is ".." can never be a link.
- profile._wire: _FINAL_LINE's comment says "V1 and V0 forms" but only words are refused: a
  model "0" answers AT+CGMM under ATV0 as b"0\r\n0\r" -- a V0 host reading to <CR> takes the
  model line for the OK (docs/behaviour.md: ATV0 result codes are digits then <CR>).
- the state dir itself is no taken name: --trace/--keylog S (S the missing state dir) make the
  file, then exit 1 "cannot start: S: File exists"; --control S: the dir made, then exit 1
  "already in use"; --count 3 --link S/{n}: S/0 made and locked, then exit 1.
- --config / --scenario with a NUL in the path: the raw NUL byte is written in the refusal
  (check_distinct_paths and --profile escape it); the scenario calls it "not valid TOML".
"""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from emulator.at.escape import EscapeDetector
from emulator.modem.profile import PROFILE_MAX, ProfileError, load_profile, read_limited
from tests.e2e.profile_support import EC2X
from tests.e2e.test_adversarial_field_tools_11 import _start_refused
from tests.e2e.test_adversarial_user_profiles_5 import derive, write

ROOT = Path(__file__).resolve().parents[2]
OK = b"\r\nOK\r\n"


def _one_line_exit_2(code, line, err):
    assert (code, line) == (2, ""), (code, line, err)
    assert err.count("\n") == 1 and "Traceback" not in err, err


def _left(tmp_path: Path, keep: set) -> list:
    return sorted(p.name for p in tmp_path.iterdir() if p.name not in keep | {"start.err"})


# == 46de052: escape ==============================================================================
def test_a_plus_read_at_the_deadline_is_data_for_every_start_time():
    """_within and deadline() agree at the deadline itself, whatever the rounding of
    first_at + guard, at guards 1/50 .. 255/50 and start times across many binades."""
    for s12 in (1, 3, 7, 50, 255):
        g = s12 / 50
        for k in range(200):
            t0 = 0.1 + k * 12345.678901
            d = EscapeDetector(g, t0 - 2 * g)
            assert d.feed(b"+", t0) == b""
            dl = d.deadline()
            out = d.feed(b"++", dl)                 # late: the held "+" is data, never "+++"
            assert out.startswith(b"+") and d.held != 3, (s12, t0, out, d.held)
            assert d.expire(dl) == (b"", False) or d.held == 0
            d2 = EscapeDetector(g, t0 - 2 * g)
            d2.feed(b"+", t0)
            prev = math.nextafter(dl, -math.inf)
            if prev > t0:
                assert d2.feed(b"++", prev) == b"" and d2.held == 3, (s12, t0, prev, dl)


# == 46de052: paths ===============================================================================
@pytest.mark.parametrize("link", ["/", ".", "./"])
def test_link_root_or_dot_is_one_line_exit_2(tmp_path, link):
    code, line, err = _start_refused(tmp_path, "--link", link)
    _one_line_exit_2(code, line, err)


def test_link_ending_in_dotdot_is_refused_creating_nothing(tmp_path):
    code, line, err = _start_refused(tmp_path, "--link", str(tmp_path / "x" / "y" / ".."))
    assert "Traceback" not in err
    assert not (tmp_path / "x").exists(), (code, err, _left(tmp_path, set()))
    _one_line_exit_2(code, line, err)


def test_count_3_state_dir_lock_and_trace_collide(tmp_path):
    code, line, err = _start_refused(tmp_path, "--count", "3", "--link", str(tmp_path / "m{n}"),
                                     "--trace", str(tmp_path / "st" / "2" / ".lock"))
    _one_line_exit_2(code, line, err)
    assert "same file" in err and "st/2" in err, err
    assert _left(tmp_path, set()) == []


def test_count_3_link_lock_and_keylog_collide_keeping_the_file(tmp_path):
    lock = tmp_path / ".m1.lock"
    lock.write_bytes(b"precious\n")
    code, line, err = _start_refused(tmp_path, "--count", "3", "--link", str(tmp_path / "m{n}"),
                                     "--keylog", str(lock))
    _one_line_exit_2(code, line, err)
    assert lock.read_bytes() == b"precious\n"
    assert _left(tmp_path, {".m1.lock"}) == []


def test_relative_state_dir_with_dotdot_meets_the_trace(tmp_path):
    (tmp_path / "a").mkdir()
    err = tmp_path / "e"
    proc = subprocess.run([sys.executable, "-m", "emulator", "--offline", "--state-dir", "a/../s",
                           "--trace", "s/.lock"], cwd=tmp_path, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=15,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    _one_line_exit_2(proc.returncode, proc.stdout.strip(), proc.stderr)
    assert "same file" in proc.stderr
    assert not (tmp_path / "s").exists() and not err.exists()


def test_default_state_dir_lock_meets_a_trace_there(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    trace = home / ".local" / "state" / "modem-emulator" / "ec2x" / ".lock"
    proc = subprocess.run([sys.executable, "-m", "emulator", "--offline", "--trace", str(trace)],
                          cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=15, env={**os.environ, "HOME": str(home)})
    _one_line_exit_2(proc.returncode, proc.stdout.strip(), proc.stderr)
    assert "state dir" in proc.stderr and "same file" in proc.stderr
    assert list(home.iterdir()) == []


def test_a_link_that_is_a_symlink_to_the_state_dirs_lock_is_refused(tmp_path):
    (tmp_path / "st").mkdir()
    (tmp_path / "L").symlink_to(tmp_path / "st" / ".lock")
    code, line, err = _start_refused(tmp_path, "--link", str(tmp_path / "L"))
    _one_line_exit_2(code, line, err)
    assert "same file" in err
    assert os.readlink(tmp_path / "L") == str(tmp_path / "st" / ".lock")
    assert list((tmp_path / "st").iterdir()) == []


@pytest.mark.parametrize("opt", ["--trace", "--keylog", "--control", "--link", "--state-dir"])
def test_a_nul_in_any_path_is_one_line(tmp_path, opt):
    proc = subprocess.run([sys.executable, "-c",
                           "import sys; from emulator.tools.cli import main; "
                           f"sys.exit(main(['--offline', '--state-dir', {str(tmp_path / 'st')!r}, "
                           f"{opt!r}, {str(tmp_path / 'a')!r} + chr(0) + 'b']))"],
                          cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=15)
    _one_line_exit_2(proc.returncode, proc.stdout.strip(), proc.stderr)
    assert _left(tmp_path, set()) == []


# == 16c2656: final result codes in profile strings ===============================================
def _profile(tmp_path, *edits):
    return write(tmp_path, derive(EC2X, *edits), "p.toml")


FINALS = ["OK", "ok", " OK ", "ERROR", "No Carrier", "NO CARRIER ", "BUSY", "NO ANSWER",
          "NO DIALTONE", "CONNECT", "CONNECT 115200", "+CME ERROR: 10", "+cms error: 500",
          "SEND OK", "send fail"]
KEYS = [('manufacturer = "Quectel"', 'manufacturer = "{}"'),
        ('model = "EC25"', 'model = "{}"'),
        ('revision = "EC25EFAR06A06M4G"', 'revision = "{}"'),
        ('ati = ["Quectel", "EC25",', 'ati = ["{}", "EC25",'),
        ('boot_urcs = ["RDY",', 'boot_urcs = ["{}",'),
        ('firmware = "EC25EFAR06A06M4G_01.001.01.001"', 'firmware = "{}"'),
        ('me_detach = "+CGEV: ME DETACH"', 'me_detach = "{}"'),
        ("deact_urc = '+QIURC: \"pdpdeact\",{cid}'", "deact_urc = '{}'")]


@pytest.mark.parametrize("final", FINALS)
def test_every_whole_line_key_refuses_a_final_result_code(tmp_path, final):
    for old, new in KEYS:
        path = _profile(tmp_path, (old, new.format(final)))
        with pytest.raises(ProfileError, match="final result code") as info:
            load_profile(str(path))
        assert "\n" not in str(info.value)
    path = _profile(tmp_path, ("deact_urc = '+QIURC: \"pdpdeact\",{cid}'", "deact_urc = 'CONNECT {cid}'"))
    with pytest.raises(ProfileError, match="final result code"):
        load_profile(str(path))


@pytest.mark.parametrize("text", ["Revision: OK", "OKAY", "CONNECTED", "NO CARRIERS", "OK1",
                                  "ERRORS", "+CME ERROR", "SEND", "RING", "O K"])
def test_lines_that_only_look_like_finals_load(tmp_path, text):
    for old, new in KEYS[:6]:
        load_profile(str(_profile(tmp_path, (old, new.format(text)))))


def test_quoted_values_may_be_final_words_and_items_refuse_them(tmp_path):
    load_profile(str(_profile(tmp_path, ('operator = "CHN-UNICOM"', 'operator = "OK"'))))
    path = _profile(tmp_path, ('"+QSSLOPEN" = "quectel"', '"+QSSLOPEN" = "quectel"\n"+QıSTATE" = "*"'))
    with pytest.raises(ProfileError, match="ASCII"):
        load_profile(str(path))


@pytest.mark.parametrize("digit", ["0", "4"])
def test_a_v0_numeric_final_as_a_whole_line_is_refused(tmp_path, digit):
    with pytest.raises(ProfileError):
        load_profile(str(_profile(tmp_path, ('model = "EC25"', f'model = "{digit}"'))))


def test_a_digit_inside_a_line_still_loads(tmp_path):
    """(the V0 check is for whole lines only: an ATI line "Revision: 0", a model "0A" load)"""
    load_profile(str(_profile(tmp_path, ('model = "EC25"', 'model = "0A"'))))


def test_builtins_load_unchanged():
    for name in ("ec2x", "ml302"):
        p = load_profile(name)
        assert p.name == name


def test_add_modem_takes_a_path(open_modem, tmp_path):
    path = _profile(tmp_path, ('model = "EC25"', 'model = "EC25P"'))
    host, _ = open_modem(path)
    assert host.at("AT+CGMM") == b"\r\nEC25P\r\n" + OK


# == 16c2656: read_limited, encodings =============================================================
def test_read_limited_exact_limit_and_one_over(tmp_path):
    f = tmp_path / "f"
    with open(f, "wb") as out:
        out.truncate(PROFILE_MAX)
    assert len(read_limited(f)) == PROFILE_MAX
    with open(f, "ab") as out:
        out.truncate(PROFILE_MAX + 1)
    with pytest.raises(ValueError, match="64 MiB"):
        read_limited(f)


@pytest.mark.parametrize("opt", ["--config", "--scenario", "--profile"])
@pytest.mark.parametrize("size", [PROFILE_MAX, PROFILE_MAX + 1])
def test_huge_sparse_files_are_one_line_exit_2(tmp_path, opt, size):
    f = tmp_path / "big.toml"
    with open(f, "wb") as out:
        out.truncate(size)
    code, line, err = _start_refused(tmp_path, opt, str(f))
    _one_line_exit_2(code, line, err)
    assert ("64 MiB" in err) == (size > PROFILE_MAX), err
    assert _left(tmp_path, {"big.toml"}) == []


@pytest.mark.parametrize("body,starts", [(b"offline = true\r\n", True), (b"# x\roffline = true\r", True),
                                         (b"\xef\xbb\xbfoffline = true\n", False),
                                         (b"offline = true # \xff\n", False)])
def test_config_line_ends_bom_and_bad_bytes(tmp_path, body, starts):
    (tmp_path / "c.toml").write_bytes(body)
    code, line, err = _start_refused(tmp_path, "--config", str(tmp_path / "c.toml"))
    if starts:
        assert code is None and line, (code, line, err)
    else:
        _one_line_exit_2(code, line, err)
        assert _left(tmp_path, {"c.toml"}) == []


SCENARIO = b'description = "x"\n[[step]]\nat = 1\nop = "urc"\ntext = "+QIURC: 1"\n'


@pytest.mark.parametrize("eol", [b"\r\n", b"\r"])
def test_scenario_crlf_and_lone_cr_parse_as_lf(tmp_path, eol):
    from emulator.tools.scenario import load_scenario
    f = tmp_path / "s.toml"
    f.write_bytes(SCENARIO.replace(b"\n", eol))
    g = tmp_path / "g.toml"
    g.write_bytes(SCENARIO)
    a, b = load_scenario(f), load_scenario(g)
    assert repr(a).replace("s.toml", "g.toml") == repr(b)


@pytest.mark.parametrize("body", [b"\xff\n", b"\xef\xbb\xbf" + SCENARIO, b"[[step]]\nat = 1\nop = \"urc\"\ntext = \"\xc3\"\n"])
def test_scenario_bad_bytes_and_bom_are_one_line_exit_2(tmp_path, body):
    f = tmp_path / "s.toml"
    f.write_bytes(body)
    code, line, err = _start_refused(tmp_path, "--scenario", str(f))
    _one_line_exit_2(code, line, err)
    assert _left(tmp_path, {"s.toml"}) == []


def test_config_through_a_pipe_is_read(tmp_path):
    r, w = os.pipe()
    os.write(w, b"offline = true\n")
    os.close(w)
    err = tmp_path / "e"
    proc = subprocess.Popen([sys.executable, "-m", "emulator", "--state-dir", str(tmp_path / "st"),
                             "--config", f"/dev/fd/{r}"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=open(err, "w"), text=True, pass_fds=(r,))
    os.close(r)
    line = proc.stdout.readline().strip()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)
    assert line.startswith("/dev/"), (line, err.read_text())


# The state dir itself (not only its .lock) is a name the emulator creates: a --trace / --keylog
# / --control / --link naming it makes that file first, then the state dir's mkdir fails (exit 1).
@pytest.mark.parametrize("opt", ["--trace", "--keylog"])
def test_a_trace_or_keylog_naming_the_state_dir_is_refused_creating_nothing(tmp_path, opt):
    code, line, err = _start_refused(tmp_path, opt, str(tmp_path / "st"))
    assert not (tmp_path / "st").exists(), (code, err)
    _one_line_exit_2(code, line, err)


def test_control_naming_the_state_dir_is_refused_creating_nothing(tmp_path):
    code, line, err = _start_refused(tmp_path, "--control", str(tmp_path / "st"))
    assert not (tmp_path / "st").exists(), (code, err)
    _one_line_exit_2(code, line, err)


def test_links_naming_the_modems_state_dirs_are_refused_creating_nothing(tmp_path):
    code, line, err = _start_refused(tmp_path, "--count", "3", "--link", str(tmp_path / "st" / "{n}"))
    assert not (tmp_path / "st").exists(), (code, err)
    _one_line_exit_2(code, line, err)


@pytest.mark.parametrize("opt", ["--profile", "--config", "--scenario"])
def test_a_nul_in_a_file_option_is_one_line_exit_2(tmp_path, opt):
    proc = subprocess.run([sys.executable, "-c",
                           "import sys; from emulator.tools.cli import main; "
                           f"sys.exit(main(['--offline', '--state-dir', {str(tmp_path / 'st')!r}, "
                           f"{opt!r}, {str(tmp_path / 'a')!r} + chr(0) + 'b.toml']))"],
                          cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, timeout=15)
    _one_line_exit_2(proc.returncode, proc.stdout.strip().decode(), proc.stderr.decode("latin-1"))
    assert _left(tmp_path, set()) == []


@pytest.mark.parametrize("opt", ["--config", "--scenario"])
def test_a_nul_in_config_or_scenario_path_is_not_written_raw(tmp_path, opt):
    proc = subprocess.run([sys.executable, "-c",
                           "import sys; from emulator.tools.cli import main; "
                           f"sys.exit(main(['--offline', '--state-dir', {str(tmp_path / 'st')!r}, "
                           f"{opt!r}, {str(tmp_path / 'a')!r} + chr(0) + 'b.toml']))"],
                          cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, timeout=15)
    assert proc.returncode == 2
    assert b"\0" not in proc.stderr, proc.stderr
