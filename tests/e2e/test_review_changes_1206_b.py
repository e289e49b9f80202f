"""Adversarial review of main's changes of 2026-12-06 (5022587..HEAD): AT+QICLOSE of an id with
nothing open is OK (an SSL client's id still ERROR 572), the profile load-time checks, and the
make-test ordering hook (tests/conftest.py pytest_collection_modifyitems, tests/slow_first.txt)."""
from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emulator.testing.peers import TcpServer, TlsServer
from tests.e2e.socket_support import TCP_HOST, TCP_PORT, error_code, free_port, qiopen, qird, qisend

OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"
ROOT = Path(__file__).resolve().parents[2]


def _qistate(host, cid: int) -> bytes:
    return host.at(f"AT+QISTATE=1,{cid}")


# -- AT+QICLOSE ------------------------------------------------------------------------------

def test_qiclose_never_opened_id_is_ok_and_clears_the_last_error(ec2x):
    assert ec2x.at("AT+QICLOSE=12") == ERROR             # out of range: 552
    assert error_code(ec2x) == 552
    assert ec2x.at("AT+QICLOSE=3") == OK
    assert error_code(ec2x) == 0
    assert ec2x.at("AT+QICLOSE=3,0") == OK
    assert ec2x.at("AT+QICLOSE=3,65535") == OK
    assert ec2x.at("AT+QICLOSE=3;+QICLOSE=3") == OK
    assert _qistate(ec2x, 3) == OK


def test_qiclose_of_ssl_client_ids_is_572_and_leaves_them(net, ec2x, pki, emulator):
    with TlsServer(pki.server, mode="echo") as server:
        net(server, "ssl.example", 443)
        assert ec2x.at('AT+QSSLOPEN=1,1,4,"ssl.example",443,0') == OK
        ec2x.seen(b"+QSSLOPEN: 4,0\r\n")
        before = ec2x.at("AT+QSSLSTATE=4")
        assert b'+QSSLSTATE: 4,"SSLClient"' in before
        assert ec2x.at("AT+QICLOSE=4") == ERROR
        assert error_code(ec2x) == 572
        assert ec2x.at("AT+QICLOSE=4,0") == ERROR
        assert ec2x.at("AT+QSSLSTATE=4") == before
        assert ec2x.send_data(4, b"abc") == b"\r\nSEND OK\r\n"
        ec2x.seen(b'+QSSLURC: "recv",4\r\n')
        assert ec2x.at("AT+QSSLRECV=4,100") == b"\r\n+QSSLRECV: 3\r\nabc\r\n" + OK
        assert ec2x.at("AT+QSSLCLOSE=4") == OK
        assert ec2x.at("AT+QICLOSE=4") == OK                 # freed: nothing open
        assert ec2x.quiet_for(0.5) == b""


def test_qiclose_after_failed_open_already_reported_is_ok_and_id_reopens(ec2x, net, emulator, tcp_echo):
    """RT-Thread's flow: +QIOPEN: 0,566 (refused), AT+QICLOSE=0 OK, retry."""
    emulator.router.add_map("refused.example", 7100, "127.0.0.1", free_port())
    assert ec2x.at('AT+QIOPEN=1,0,"TCP","refused.example",7100,0,0') == OK
    code = int(re.search(rb"\+QIOPEN: 0,(\d+)\r\n", ec2x.seen(re.compile(rb"\+QIOPEN: 0,\d+\r\n"))).group(1))
    assert code != 0
    assert error_code(ec2x) == code
    assert ec2x.at("AT+QICLOSE=0") == OK
    assert error_code(ec2x) == 0
    qiopen(ec2x, 0)
    assert qisend(ec2x, 0, b"hi") == b"\r\nSEND OK\r\n"
    ec2x.seen(b'+QIURC: "recv",0\r\n')
    assert qird(ec2x, 0)[1] == b"hi"
    assert ec2x.at("AT+QICLOSE=0") == OK


def test_qiclose_drops_a_failed_opens_answer_still_queued(ec2x, net, emulator, tcp_echo):
    """The open on id 0 is refused while the port is busy (a slow AT+QISTATE in the same line):
    its "+QIOPEN: 0,<err>" waits in the queue.  The same line's AT+QICLOSE=0 (OK: nothing open)
    and AT+QIOPEN=...,0 open a new socket on id 0.  AT+QSSLCLOSE drops such queued news
    (SocketService.drop_news); after the line's OK the host must read only the new open's
    "+QIOPEN: 0,0", never the stale failure (it would take it for the new open's answer)."""
    emulator.router.add_map("refused.example", 7100, "127.0.0.1", free_port())
    assert emulator.control("slow", command="+QISTATE", ms=1500)["ok"]
    ec2x.write(f'AT+QIOPEN=1,0,"TCP","refused.example",7100,0,0;+QISTATE;+QICLOSE=0;'
               f'+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,0\r')
    ec2x.read_until(OK, 10)
    assert emulator.control("slow", command="+QISTATE", ms=0)["ok"]
    first = ec2x.seen(re.compile(rb"\+QIOPEN: 0,\d+\r\n"))
    assert first.endswith(b"+QIOPEN: 0,0\r\n"), first
    ec2x.quiet_for(0.5)
    t = bytes(ec2x.transcript)
    assert len(re.findall(rb"\+QIOPEN: 0,", t)) == 1, t


def test_qsslclose_drops_a_failed_ssl_opens_answer_still_queued(ec2x, net, emulator):
    """The same line with the SSL commands: the reference behaviour the TCP/IP close should share."""
    emulator.router.add_map("refused.example", 7100, "127.0.0.1", free_port())
    emulator.router.add_map("refused2.example", 7101, "127.0.0.1", free_port())
    assert emulator.control("slow", command="+QSSLSTATE", ms=1500)["ok"]
    ec2x.write('AT+QSSLOPEN=1,1,0,"refused.example",7100,0;+QSSLSTATE;+QSSLCLOSE=0;'
               '+QSSLOPEN=1,1,0,"refused2.example",7101,0\r')
    ec2x.read_until(OK, 10)
    assert emulator.control("slow", command="+QSSLSTATE", ms=0)["ok"]
    ec2x.seen(re.compile(rb"\+QSSLOPEN: 0,\d+\r\n"))
    ec2x.quiet_for(0.5)
    t = bytes(ec2x.transcript)
    assert len(re.findall(rb"\+QSSLOPEN: 0,", t)) == 1, t


def test_refused_open_then_close_and_reopen_in_one_line_reports_one_answer(ec2x, net, tcp_echo):
    """Was a bug: AT+QIOPEN refused at once (561, PDP inactive), AT+QICLOSE=<id> and a new
    AT+QIOPEN on the id in one line: the refusal's +QIOPEN: 0,561, not tied to its id, came
    after the line's OK, before the new open's answer.  Now the close drops it."""
    ec2x.write(f'AT+QIOPEN=2,0,"TCP","{TCP_HOST}",{TCP_PORT},0,0;+QICLOSE=0;'
               f'+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,0\r')
    ec2x.read_until(OK, 10)
    first = ec2x.seen(re.compile(rb"\+QIOPEN: 0,\d+\r\n"))
    ec2x.quiet_for(0.5)
    assert first.endswith(b"+QIOPEN: 0,0\r\n"), bytes(ec2x.transcript)
    assert bytes(ec2x.transcript).count(b"+QIOPEN: 0,") == 1, bytes(ec2x.transcript)


def test_qiclose_of_a_pending_connect_is_ok_and_no_open_answer_follows(ec2x, net, emulator, tcp_echo):
    assert emulator.control("handshake_stall", count=1)["ok"]
    assert ec2x.at(f'AT+QIOPEN=1,1,"TCP","{TCP_HOST}",{TCP_PORT},0,0') == OK
    assert re.search(rb'\+QISTATE: 1,"TCP",.*,1,1,1,0,"usbmodem"', _qistate(ec2x, 1))    # opening
    assert ec2x.at("AT+QICLOSE=1,0;+QICLOSE=1") == OK
    assert error_code(ec2x) == 0
    assert _qistate(ec2x, 1) == OK
    assert ec2x.quiet_for(0.5) == b""
    qiopen(ec2x, 1)
    assert qisend(ec2x, 1, b"xy") == b"\r\nSEND OK\r\n"
    ec2x.seen(b'+QIURC: "recv",1\r\n')
    assert qird(ec2x, 1)[1] == b"xy"


def test_qiclose_after_peer_close_state_4_then_again(ec2x, net, emulator):
    with TcpServer("echo") as server:
        emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", server.port)
        qiopen(ec2x, 2)
        assert emulator.control("drop", socket=2, how="close")["ok"]
        ec2x.seen(b'+QIURC: "closed",2\r\n')
        assert re.search(rb'\+QISTATE: 2,"TCP",.*,4,1,2,0,"usbmodem"', _qistate(ec2x, 2))
        assert ec2x.at("AT+QICLOSE=2") == OK
        assert error_code(ec2x) == 0
        assert ec2x.at("AT+QICLOSE=2") == OK
        assert _qistate(ec2x, 2) == OK
        assert ec2x.quiet_for(0.3) == b""
        qiopen(ec2x, 2)
        assert ec2x.at("AT+QICLOSE=2") == OK


def test_qiclose_listener_and_its_incoming_udp_service_and_ssl_neighbour(ec2x, net, emulator, pki):
    """A listener on 5, a client accepted on its lowest free id, a UDP SERVICE on 7 and an SSL
    client on 0: each AT+QICLOSE closes only its id; AT+QICLOSE of the SSL id is 572."""
    import socket as so
    lport, uport = free_port(), free_port(so.SOCK_DGRAM)
    with TlsServer(pki.server, mode="echo") as server:
        net(server, "ssl.example", 443)
        assert ec2x.at('AT+QSSLOPEN=1,1,0,"ssl.example",443,0') == OK
        ec2x.seen(b"+QSSLOPEN: 0,0\r\n")
        qiopen(ec2x, 5, "TCP LISTENER", "127.0.0.1", 0, local_port=lport)
        qiopen(ec2x, 7, "UDP SERVICE", "127.0.0.1", 0, local_port=uport)
        c = so.create_connection(("127.0.0.1", lport), timeout=5)
        inc = ec2x.seen(re.compile(rb'\+QIURC: "incoming",\d+,5,[^\r]*\r\n'))
        iid = int(re.search(rb'"incoming",(\d+),5', inc).group(1))
        assert iid == 1
        assert ec2x.at("AT+QICLOSE=0") == ERROR
        assert error_code(ec2x) == 572
        assert ec2x.at("AT+QICLOSE=5") == OK                 # the listener
        assert _qistate(ec2x, 5) == OK
        c.sendall(b"still")
        ec2x.seen(b'+QIURC: "recv",1\r\n')
        assert qird(ec2x, 1)[1] == b"still"                 # the incoming lives on
        assert ec2x.at("AT+QICLOSE=1,0") == OK              # abort at once
        c.settimeout(5)
        try:
            assert c.recv(10) == b""
        except ConnectionResetError:
            pass
        c.close()
        assert _qistate(ec2x, 1) == OK
        assert ec2x.at("AT+QICLOSE=7,0") == OK
        assert _qistate(ec2x, 7) == OK
        assert error_code(ec2x) == 0
        assert ec2x.send_data(0, b"ssl") == b"\r\nSEND OK\r\n"
        ec2x.seen(b'+QSSLURC: "recv",0\r\n')
        assert ec2x.at("AT+QSSLRECV=0,100") == b"\r\n+QSSLRECV: 3\r\nssl\r\n" + OK
        assert ec2x.at("AT+QISTATE") == OK
        qiopen(ec2x, 5, "TCP LISTENER", "127.0.0.1", 0, local_port=lport)   # the port is free again
        assert ec2x.at("AT+QICLOSE=5") == OK
        assert ec2x.quiet_for(0.3) == b""


def test_qsslclose_of_a_tcp_ids_socket(ec2x, net, tcp_echo):
    """AT+QSSLCLOSE on an AT+QIOPEN socket's id: the mirror of AT+QICLOSE on an SSL id."""
    qiopen(ec2x, 3)
    ans = ec2x.at("AT+QSSLCLOSE=3")
    state = _qistate(ec2x, 3)
    assert (ans, b'+QISTATE: 3,"TCP"' in state) in ((ERROR, True), (OK, False)), (ans, state)


def test_qiclose_byte_by_byte_host(ec2x, net, tcp_echo):
    qiopen(ec2x, 4)
    for b in b"AT+QICLOSE=4,0\r":
        ec2x.write(bytes([b]))
        time.sleep(0.005)
    assert ec2x.read_until(OK) == OK
    for b in b"AT+QICLOSE=4\r":
        ec2x.write(bytes([b]))
        time.sleep(0.005)
    assert ec2x.read_until(OK) == OK
    assert ec2x.quiet_for(0.3) == b""


def test_behaviour_md_has_no_stale_qiclose_error_statement():
    text = " ".join((ROOT / "docs" / "behaviour.md").read_text().split())
    assert "AT+QICLOSE is ERROR on an id with nothing open" not in text


# -- profile load-time checks ----------------------------------------------------------------
from emulator.modem.profile import PROFILE_DIR, load_profile  # noqa: E402
from tests.e2e.profile_support import EC2X, load_error_of_edit  # noqa: E402

ML302 = (PROFILE_DIR / "ml302.toml").read_text()
ERRORS_TABLE = EC2X[EC2X.index("[ssl.errors]"):EC2X.index("[tcpip]")]


def test_builtin_profiles_and_readme_copy_and_edit_still_load(tmp_path):
    from tls_engine.ciphers import CIPHER_TABLE
    ec2x, ml302 = load_profile("ec2x"), load_profile("ml302")
    assert ec2x.get("ssl.cipher_suites") == [s.code for s in CIPHER_TABLE.values()]
    assert ml302.get("ssl.cipher_suites") == ["0X0035", "0X0005", "0X0004", "0X000A", "0X002F", "0X003D"]
    assert ec2x.get("ssl.errors")["unknown"] == 550 and ml302.get("ssl.errors")["unknown"] == -1
    # README: copy profiles/ec2x.toml, edit identity strings, ranges, defaults, the command table
    text = (EC2X.replace('"EC25"', '"EC25-MINE"', 1)
            .replace('ati = ["Quectel", "EC25", "Revision: EC25EFAR06A06M4G"]',
                     'ati = ["Quectel", "EC25-MINE", "Revision: X"] # mine')
            .replace("send_max = 1460                 # AT+QSSLSEND", "send_max = 1000 # AT+QSSLSEND", 1))
    path = tmp_path / "my.toml"
    path.write_text(text)
    mine = load_profile(str(path))
    assert mine.get("identity.ati") == ["Quectel", "EC25-MINE", "Revision: X"]
    assert mine.get("ssl.send_max") == 1000
    path2 = tmp_path / "my302.toml"
    path2.write_text(ML302.replace('cipher_suites = ["0X0035"', 'cipher_suites = ["0x35"').replace(
        '"0X003D"]', '"0x3d"]'))
    assert load_profile(str(path2)).get("ssl.cipher_suites") == ml302.get("ssl.cipher_suites")


@pytest.mark.parametrize("old,new,message", [
    (ERRORS_TABLE, "", "key ssl.errors: missing"),
    ("unknown = 550\n", "", 'key ssl.errors: no "unknown" (the code of every failure kind the table does not list)'),
    ("unknown = 550", "unknown = 0", "key ssl.errors: [unknown] must not be 0 (the success code)"),
    ("dns = 565", "dns = -0", "key ssl.errors: [dns] must not be 0 (the success code)"),
    ("unknown = 550", "unknown = true", "key ssl.errors: [unknown] must be an integer, got True"),
    ("unknown = 550", "unknown = 0.0", "key ssl.errors: [unknown] must be an integer, got 0.0"),
    ("dialect = \"quectel\"", 'cipher_suites = ["0x2f", "0X002F"]\ndialect = "quectel"',
     "key ssl.cipher_suites: 0X002F is listed twice"),
    ("dialect = \"quectel\"", 'cipher_suites = ["0X0002F"]\ndialect = "quectel"',
     'key ssl.cipher_suites: item 0: must be 0X and 1-4 hex digits, like "0X0035", got \'0X0002F\''),
    ("dialect = \"quectel\"", 'cipher_suites = ["0X+2F"]\ndialect = "quectel"',
     'key ssl.cipher_suites: item 0: must be 0X and 1-4 hex digits, like "0X0035", got \'0X+2F\''),
    ("dialect = \"quectel\"", 'cipher_suites = [" 0X2F"]\ndialect = "quectel"',
     'key ssl.cipher_suites: item 0: must be 0X and 1-4 hex digits, like "0X0035", got \' 0X2F\''),
    ("dialect = \"quectel\"", 'cipher_suites = ["0X2F\\n"]\ndialect = "quectel"',
     "key ssl.cipher_suites: item 0: must be 0X and 1-4 hex digits, like \"0X0035\", got '0X2F\\n'"),
    ("dialect = \"quectel\"", 'cipher_suites = ["0X00_2F"]\ndialect = "quectel"',
     'key ssl.cipher_suites: item 0: must be 0X and 1-4 hex digits, like "0X0035", got \'0X00_2F\''),
    ("send_buffer = 16384             # bytes queued towards the network before SEND FAIL\nrecv_buffer = 65536",
     "send_buffer = 1459\nrecv_buffer = 65536",
     "key ssl.send_buffer: 1459 is less than ssl.send_max = 1460 (a send that long could never be queued)"),
    ("baud_rates = [4800,", "baud_rates = [0, 4800,", "key serial.baud_rates: item 0: must be in 1..4000000, got 0"),
    ("baud_rates = [4800,", "baud_rates = [9600, 4800,", "key serial.baud_rates: 9600 is listed twice"),
    ('ati = ["Quectel",', 'ati = ["' + "x" * 2049 + '", "Quectel",',
     "key identity.ati: item 0: 2049 characters: at most 2048"),
    ('ati = ["Quectel",', "ati = [" + '"l", ' * 30 + '"Quectel",',
     "key identity.ati: must have 1..32 items, got 33"),
])
def test_profile_refusals_are_exact(tmp_path, old, new, message):
    assert load_error_of_edit(tmp_path, old, new) == message


def test_profile_limits_accept_their_boundaries(tmp_path):
    path = tmp_path / "edge.toml"
    path.write_text(EC2X.replace('ati = ["Quectel",', "ati = [" + '"l", ' * 28 + '"' + "y" * 2048 + '", "Quectel",')
                    .replace("send_buffer = 16384             # bytes queued towards the network before SEND FAIL\n"
                             "recv_buffer = 65536", "send_buffer = 1460\nrecv_buffer = 65536", 1)
                    .replace("unknown = 550", "unknown = 1000"))      # (the quectel dialect: 1..1000, 3409fdd)
    p = load_profile(str(path))
    assert len(p.get("identity.ati")) == 32 and p.get("ssl.send_buffer") == 1460
    onemo = tmp_path / "edge-onemo.toml"                   # (the onemo dialect's codes go to -1000)
    onemo.write_text(ML302.replace("\nunknown = -1", "\nunknown = -1000", 1))
    assert load_profile(str(onemo)).get("ssl.errors")["unknown"] == -1000


def test_tcpip_send_buffer_names_the_largest_send(tmp_path):
    msg = load_error_of_edit(tmp_path, "sendex_max = 512                # AT+QISENDEX <hex_string>: bytes\nsend_buffer = 16384",
                             "sendex_max = 512\nsend_buffer = 1000")
    assert msg == "key tcpip.send_buffer: 1000 is less than tcpip.send_max = 1460 (a send that long could never be queued)"
    msg = load_error_of_edit(tmp_path, "sendex_max = 512", "sendex_max = 20000")
    assert msg.startswith("key tcpip.send") and "sendex_max = 20000" in msg, msg


def test_cme_text_keys_with_control_characters_stay_on_one_line(tmp_path):
    assert load_error_of_edit(tmp_path, "\n[commands]\n", '\n[cme_text]\n"4\\r\\n16" = "x"\n\n[commands]\n') == \
        "key cme_text: key '4\\r\\n16' is not a +CME ERROR code (a number, 0-65535, as \"416\")"
    for key in ("0416", "65536", "-1", "\\u0664", "+416", ""):
        msg = load_error_of_edit(tmp_path, "\n[commands]\n", f'\n[cme_text]\n"{key}" = "x"\n\n[commands]\n')
        assert msg.startswith("key cme_text: key ") and "\n" not in msg, (key, msg)
    path = tmp_path / "ok.toml"
    path.write_text(EC2X.replace("\n[commands]\n", '\n[cme_text]\n"0" = "zero"\n"65535" = "max"\n\n[commands]', 1))
    assert load_profile(str(path)).get("cme_text") == {"0": "zero", "65535": "max"}


def _cli(args, timeout=60):
    return subprocess.run([sys.executable, "-m", "emulator", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("how", ["run", "replay"])
def test_bad_profile_on_the_command_line_is_one_escaped_line_exit_2(tmp_path, how):
    bad = tmp_path / "we\x1b[2Jird\nname.toml"
    bad.write_text(EC2X.replace("\n[commands]\n", '\n[cme_text]\n"4\\u001b[31m" = "x"\n\n[commands]', 1))
    if how == "run":
        proc = _cli(["--profile", str(bad), "--offline", "--link", str(tmp_path / "modem"),
                     "--state-dir", str(tmp_path / "state")])
    else:
        trace = tmp_path / "h.log"
        trace.write_text(">> AT\n<< OK\n")
        proc = _cli(["replay", str(trace), "--profile", str(bad)])
    assert proc.returncode == 2, proc.stderr[-500:]
    assert proc.stderr.count("\n") == 1 and "\x1b" not in proc.stderr, proc.stderr
    assert "we\\x1b[2Jird\\nname.toml" in proc.stderr, proc.stderr
    assert proc.stderr.rstrip("\n").endswith(
        "key cme_text: key '4\\x1b[31m' is not a +CME ERROR code (a number, 0-65535, as \"416\")"), proc.stderr


# -- make test: tests/conftest.py pytest_collection_modifyitems + tests/slow_first.txt --------
import os  # noqa: E402
import shutil  # noqa: E402

MINI_A = '''
import pytest

def test_1():
    pass

def test_2():
    pass

def test_3():
    pass

@pytest.mark.parametrize("v", ["a b", "c"])
def test_p(v):
    pass
'''
MINI_B = '''
def test_x():
    pass
'''


def _mini_suite(tmp_path, listed: str) -> Path:
    """A project with a copy of tests/conftest.py, its own slow_first.txt and two test files."""
    (tmp_path / "tests").mkdir()
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "tests" / "conftest.py")
    (tmp_path / "tests" / "slow_first.txt").write_text("# header comment\n" + listed)
    (tmp_path / "tests" / "test_a.py").write_text(MINI_A)
    (tmp_path / "tests" / "test_b.py").write_text(MINI_B)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    return tmp_path


def _pytest(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=f"{root}:{ROOT}")
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly",
                           "--rootdir", str(root), *args], cwd=root, capture_output=True, text=True,
                          timeout=60, env=env)


LISTED = ("9.0 tests/test_b.py::test_x\n5.0 tests/test_a.py::test_3\n"
          "3.0 tests/test_gone.py::test_renamed\n1.0 tests/test_a.py::test_p[c]\n")


def test_slow_first_order_with_a_stale_name_and_selections(tmp_path):
    root = _mini_suite(tmp_path, LISTED)
    proc = _pytest(root, "-q", "--collect-only", "tests")
    ids = [l for l in proc.stdout.splitlines() if "::" in l]
    # one process: collection order kept (the slow-first order is for xdist workers only)
    assert ids == ["tests/test_a.py::test_1", "tests/test_a.py::test_2", "tests/test_a.py::test_3",
                   "tests/test_a.py::test_p[a b]", "tests/test_a.py::test_p[c]", "tests/test_b.py::test_x"], proc.stdout
    proc = _pytest(root, "-q", "-n", "0", "--maxschedchunk", "1", "--deselect", "tests/test_b.py::test_x", "tests")
    assert proc.returncode == 0 and "5 passed, 1 deselected" in proc.stdout, proc.stdout + proc.stderr
    proc = _pytest(root, "-q", "-k", "test_3 or test_1", "tests/test_a.py")
    assert proc.returncode == 0 and "2 passed, 3 deselected" in proc.stdout, proc.stdout + proc.stderr
    proc = _pytest(root, "-q", "-n", "2", "--maxschedchunk", "1", "tests")
    assert proc.returncode == 0 and "6 passed" in proc.stdout, proc.stdout + proc.stderr
    proc = _pytest(root, "-q", "tests/test_a.py::test_2")
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout + proc.stderr


def test_slow_first_line_naming_a_test_id_with_a_space(tmp_path):
    root = _mini_suite(tmp_path, LISTED + "0.5 tests/test_a.py::test_p[a b]\n")
    proc = _pytest(root, "-q", "tests/test_b.py")
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout[-600:] + proc.stderr[-600:]


def test_the_real_suites_single_file_run_keeps_collection_order():
    """In one process the listed tests are not moved (module fixtures built once); every test
    of the file is still collected once."""
    name = "tests/e2e/test_review_replay_changes_8.py"
    listed = [l.split(None, 1)[1].strip() for l in (ROOT / "tests" / "slow_first.txt").read_text().splitlines()
              if l.strip() and not l.startswith("#") and name in l]
    proc = _pytest(ROOT, "-q", "--collect-only", name)
    ids = [l for l in proc.stdout.splitlines() if "::" in l]
    assert len(listed) >= 5 and set(listed) <= set(ids), (listed, ids[:12])
    assert ids[:len(listed)] != listed                            # not moved to the front
    assert len(ids) == len(set(ids)) > len(listed)


# -- AT+QICLOSE, more states ---------------------------------------------------------------------
def test_qiclose_of_an_ssl_open_under_way_is_572_then_qsslclose_closes_it(net, ec2x, pki, emulator):
    with TlsServer(pki.server, mode="echo") as server:
        net(server, "ssl.example", 443)
        assert emulator.control("handshake_stall", count=1)["ok"]
        assert ec2x.at('AT+QSSLOPEN=1,1,2,"ssl.example",443,0') == OK
        time.sleep(0.3)
        assert ec2x.at("AT+QICLOSE=2,0") == ERROR
        assert error_code(ec2x) == 572
        assert ec2x.at("AT+QISTATE=1,2") == OK                 # not a TCP/IP socket
        assert re.search(rb'\+QSSLSTATE: 2,"SSLClient",.*,1,1,2,0,', ec2x.at("AT+QSSLSTATE=2"))
        assert ec2x.at("AT+QSSLCLOSE=2,0;+QICLOSE=2") == OK    # then nothing open: OK
        assert error_code(ec2x) == 0
        assert ec2x.quiet_for(0.5) == b""                      # no +QSSLOPEN: 2,<err> for it
        assert ec2x.at('AT+QSSLOPEN=1,1,2,"ssl.example",443,0') == OK
        ec2x.seen(b"+QSSLOPEN: 2,0\r\n")
        assert ec2x.at("AT+QSSLCLOSE=2") == OK


def _online_echo_then_escape(ec2x, data: bytes) -> None:
    """From CONNECT: `data` echoed back unframed, then the guarded "+++" -> OK."""
    ec2x.read_until(b"CONNECT\r\n")
    ec2x.write(data)
    assert ec2x.read_exactly(len(data)) == data
    time.sleep(1.2)
    ec2x.write(b"+++")
    ec2x.read_until(OK, 5)


def test_qiclose_of_a_transparent_ssl_client_after_escape_is_572_and_ato_returns(net, ec2x, pki):
    with TlsServer(pki.server, mode="echo") as server:
        net(server, "ssl.example", 443)
        ec2x.write('AT+QSSLOPEN=1,1,3,"ssl.example",443,2\r')
        _online_echo_then_escape(ec2x, b"one")
        assert ec2x.at("AT+QICLOSE=3") == ERROR
        assert error_code(ec2x) == 572
        ec2x.write("ATO\r")
        _online_echo_then_escape(ec2x, b"two")
        assert ec2x.at("AT+QSSLCLOSE=3") == OK
        assert ec2x.at("AT+QICLOSE=3") == OK


def test_listener_opened_and_closed_in_one_line_never_reports(ec2x, net):
    lport = free_port()
    assert ec2x.at(f'AT+QIOPEN=1,5,"TCP LISTENER","127.0.0.1",0,{lport},0;+QICLOSE=5') == OK
    assert ec2x.quiet_for(0.5) == b""
    assert _qistate(ec2x, 5) == OK
    qiopen(ec2x, 5, "TCP LISTENER", "127.0.0.1", 0, local_port=lport)
    assert ec2x.at("AT+QICLOSE=5;+QICLOSE=5") == OK


def test_tcp_open_and_close_in_one_line_then_reopen(ec2x, net, tcp_echo):
    ec2x.write(f'AT+QIOPEN=1,6,"TCP","{TCP_HOST}",{TCP_PORT},0,0;+QICLOSE=6,0;'
               f'+QIOPEN=1,6,"TCP","{TCP_HOST}",{TCP_PORT},0,1\r')
    assert ec2x.read_until(OK, 10) == OK
    assert ec2x.seen(re.compile(rb"\+QIOPEN: 6,\d+\r\n")).endswith(b"+QIOPEN: 6,0\r\n")
    assert ec2x.quiet_for(0.5) == b""
    assert qisend(ec2x, 6, b"pu") == b"\r\nSEND OK\r\n"
    assert ec2x.seen(b'+QIURC: "recv",6,2\r\npu\r\n')
    assert len(re.findall(rb"\+QIOPEN: 6,", bytes(ec2x.transcript))) == 1
    assert ec2x.at("AT+QICLOSE=6") == OK


def test_qiclose_timeout_lingers_then_drops_a_peer_that_stays_open(ec2x, net, tcp_sink):
    qiopen(ec2x, 8)
    t0 = time.monotonic()
    assert ec2x.at("AT+QICLOSE=8,1") == OK
    assert 0.7 < time.monotonic() - t0 < 4
    assert _qistate(ec2x, 8) == OK
    qiopen(ec2x, 8)
    t0 = time.monotonic()
    assert ec2x.at("AT+QICLOSE=8,0") == OK
    assert time.monotonic() - t0 < 0.7
    assert ec2x.quiet_for(0.3) == b""


def test_user_profiles_lower_case_cipher_ids_work_on_both_families(open_modem, tmp_path):
    ec = tmp_path / "ec.toml"
    ec.write_text(EC2X.replace('dialect = "quectel"', 'cipher_suites = ["0x2f", "0X35"]\ndialect = "quectel"', 1))
    host, _ = open_modem(str(ec))
    assert b'+QSSLCFG: "ciphersuite",(0-5),(0X002F,0X0035,0XFFFF)\r\n' in host.at("AT+QSSLCFG=?")
    assert host.at('AT+QSSLCFG="ciphersuite",1,0x2f') == OK
    assert host.at('AT+QSSLCFG="ciphersuite",1') == b'\r\n+QSSLCFG: "ciphersuite",1,0X002F\r\n' + OK
    ml = tmp_path / "ml.toml"
    old = 'cipher_suites = ["0X0035", "0X0005", "0X0004", "0X000A", "0X002F", "0X003D"]'
    assert old in ML302
    ml.write_text(ML302.replace(old, 'cipher_suites = ["0x35", "0x2F"]'))
    host, _ = open_modem(str(ml))
    assert host.at('AT+QSSLCFG="ciphersuite",1,"0x2f"') == OK
    assert host.at('AT+QSSLCFG="ciphersuite",1,"0X0005"') == ERROR          # not the profile's
    assert host.at('AT+QSSLCFG="ciphersuite",1') == b'\r\n+QSSLCFG: "ciphersuite",0X002F\r\n' + OK


def test_slow_first_order_does_not_rebuild_module_fixtures():
    files = sorted({l.split()[1].split("::")[0] for l in (ROOT / "tests" / "slow_first.txt").read_text().splitlines()
                    if l.strip() and not l.startswith("#")})
    files = [f for f in files if 'scope="module"' in (ROOT / f).read_text()]
    proc = _pytest(ROOT, "-q", "--setup-plan", *files)
    setups = re.findall(r"SETUP    M (\w+)", proc.stdout)
    assert setups.count("slow_trace") == 1 and setups.count("main_session") == 1, \
        {n: setups.count(n) for n in set(setups) if setups.count(n) > 1}


def test_qiclose_after_each_kind_of_failed_open(ec2x, net, emulator, tcp_echo):
    """565 (DNS), a transparent open refused (ERROR), a listener whose port is taken: the close
    of each id is OK, clears AT+QIGETERROR, and the id opens again."""
    import socket as so
    assert emulator.control("dns_fail", count=1)["ok"]
    assert ec2x.at(f'AT+QIOPEN=1,9,"TCP","{TCP_HOST}",{TCP_PORT},0,0') == OK
    assert ec2x.seen(re.compile(rb"\+QIOPEN: 9,\d+\r\n")).endswith(b"+QIOPEN: 9,565\r\n")
    assert error_code(ec2x) == 565
    assert ec2x.at("AT+QICLOSE=9") == OK
    assert error_code(ec2x) == 0
    emulator.router.add_map("refused.example", 7100, "127.0.0.1", free_port())
    assert ec2x.at('AT+QIOPEN=1,10,"TCP","refused.example",7100,0,2') == ERROR
    assert error_code(ec2x) == 566
    assert ec2x.at("AT+QICLOSE=10") == OK
    assert error_code(ec2x) == 0
    taken = so.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        assert ec2x.at(f'AT+QIOPEN=1,11,"TCP LISTENER","127.0.0.1",0,{taken.getsockname()[1]},0') == OK
        code = ec2x.seen(re.compile(rb"\+QIOPEN: 11,\d+\r\n"))
        assert not code.endswith(b",0\r\n"), code
        assert _qistate(ec2x, 11) == OK
        assert ec2x.at("AT+QICLOSE=11") == OK
    finally:
        taken.close()
    for cid in (9, 10, 11):
        qiopen(ec2x, cid)
    assert ec2x.at("AT+QICLOSE=9;+QICLOSE=10;+QICLOSE=11") == OK
    assert ec2x.at("AT+QISTATE") == OK
    assert ec2x.quiet_for(0.3) == b""


def test_replay_with_a_good_user_profile_still_runs(tmp_path):
    mine = tmp_path / "mine.toml"
    mine.write_text(EC2X.replace("unknown = 550", "unknown = 551"))
    log = tmp_path / "h.log"
    log.write_text(">> AT\n<< OK\n")
    proc = _cli(["replay", str(log), "--profile", str(mine)])
    assert proc.returncode == 0, proc.stdout[-400:] + proc.stderr[-400:]
    mine.write_text(EC2X.replace("unknown = 550\n", ""))
    proc = _cli(["replay", str(log), "--profile", str(mine)])
    assert proc.returncode == 2 and proc.stderr == (
        f'modem-emulator replay: profile {mine}: key ssl.errors: no "unknown" (the code of every failure '
        f'kind the table does not list)\n'), proc.stderr
