"""Review 1207 e: adversarial checks of four commits on main.

* 3847abd -- AT+QIDEACT closes the context's AT+QIOPEN sockets, listeners and UDP SERVICEs
  (TcpipService.pdp_reset): a re-open of the same id later in the same command line, a
  transparent socket parked by +++ then ATO, a line with AT+QISEND on another context after
  it, a listener whose incoming connection arrived while the line ran, SSL and TCP sockets on
  one context (SSL unchanged: id kept until AT+QSSLCLOSE), AT+QIDEACT twice after the
  network's pdpdeact.
* 9c3ae93 -- a held buffer-mode "recv" is dropped when push mode (AT+QISWTMD=<id>,1) takes
  the data on the same line; another socket's held "recv" stays; a refused switch keeps the
  "recv" and "closed"; push then buffer on one line keeps exactly one "recv".
* 274f7b0 -- control ops as "control" trace records: many ops, a refused op not recorded,
  the record in the aimed modem's trace only, the replay's hint (", ..." past five).
* 89fad22 -- terminal capture parsing with an echo starting with "A"/"a": live captures with
  ATI, lower-case typing interrupted by two URCs, a one-line AT+QISEND payload, replay with
  no difference; an echoed payload with CR LF inside (did not replay) and one whose line
  starts with "A" (the new (?i:A) start took it for an echo) -- both fixed.
* ML302: a held "recv" of one socket survives another socket's transparent open on the line.
Bugs found, fixed: AT+QIDEACT left the freed sockets' held URCs ("closed", "recv",
"incoming") to be written after the line -- after a re-open of the same id on that line they
read as news of the new socket, and a "recv" sent the host to AT+QIRD a freed id (ERROR);
now a held "recv" goes with the data, and the rest goes when the id is opened again (as
AT+QICLOSE drops them).  Every exchange is asserted byte for byte."""
from __future__ import annotations

import re
import socket
import time

import pytest

from tests.e2e import replay_support as rs
from tests.e2e.socket_support import TCP_HOST, TCP_PORT, UDP_HOST, UDP_PORT, free_port, qiopen
from tests.e2e.socket_support import conn_of
from tests.e2e.test_adversarial_chaos_host import Rig
from tests.e2e.test_adversarial_chaos_host_3 import HOST as HOST3, Rig as Rig3
from tests.e2e.test_adversarial_field_tools_4 import Ctl, ctl_path  # noqa: F401,F811 (fixture)
from tests.e2e.test_adversarial_field_tools_7 import _replay, _show

OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"
CSQ = b"\r\n+CSQ: 24,99\r\n"
FINAL = re.compile(rb"\r\n(OK|ERROR)\r\n")


def busy_line(emulator, host, advance, line: bytes, during) -> bytes:
    """`AT+CSQ;<line>` with AT+CSQ made slow (0.6 s of the modem's manual clock): during()
    runs while the line is busy (its URCs held); returns all the line wrote and 0.4 s more."""
    assert emulator.control("slow", command="+CSQ", ms=600) == {"ok": True}
    host.write(b"AT+CSQ;" + line + b"\r")
    time.sleep(0.2)
    during()
    time.sleep(0.4)
    advance(0.7)
    return host.read_until(FINAL) + host.quiet_for(0.4)


# == 3847abd: AT+QIDEACT closes the context's AT+QIOPEN sockets ===============================
def test_qideact_then_reopen_same_id_in_one_line_gets_no_stale_closed(ec2x_strict, tcp_echo):
    host, advance, _ = ec2x_strict
    qiopen(host, 0)
    got = host.at('AT+QIDEACT=1;+QIACT=1;+QIOPEN=1,0,"TCP","tcp.example",7000,0,0')
    got += host.read_until(b"+QIOPEN: 0,0\r\n") + host.quiet_for(0.4)
    # actual: OK, +QIURC: "closed",0, +QIOPEN: 0,0
    assert got == OK + b"\r\n+QIOPEN: 0,0\r\n", got
    assert host.at("AT+QISTATE=1,0").startswith(b'\r\n+QISTATE: 0,"TCP",')


def test_qideact_with_a_held_incoming_then_reopen_on_its_id(emulator, ec2x_strict):
    host, advance, _ = ec2x_strict
    lport = free_port()
    assert host.at(f'AT+QIOPEN=1,5,"TCP LISTENER","127.0.0.1",0,{lport},0') == OK
    assert host.read_until(b"+QIOPEN: 5,0\r\n") == b"\r\n+QIOPEN: 5,0\r\n"
    clients = []

    def during():
        c = socket.create_connection(("127.0.0.1", lport))
        c.sendall(b"hi")
        clients.append(c)
    line = b'+QIDEACT=1;+QIACT=1;+QIOPEN=1,0,"TCP LISTENER","127.0.0.1",0,%d,0' % lport
    got = busy_line(emulator, host, advance, line, during)
    clients[0].settimeout(2)
    assert clients[0].recv(10) == b""                 # the connection went with the context
    clients[0].close()
    assert host.at("AT+QISTATE") == \
        f'\r\n+QISTATE: 0,"TCP LISTENER","127.0.0.1",0,{lport},3,1,0,0,"usbmodem"\r\n'.encode() + OK
    # actual: ... OK, "incoming",0,5,..., "recv",0, "closed",0, "closed",5, +QIOPEN: 0,0
    assert got == CSQ + OK + b'\r\n+QIURC: "closed",5\r\n\r\n+QIOPEN: 0,0\r\n', got


def test_qideact_of_a_parked_transparent_socket_then_ato(ec2x_strict, tcp_echo):
    host, advance, _ = ec2x_strict
    assert host.at('AT+QIOPEN=1,0,"TCP","tcp.example",7000,0,2') == b"\r\nCONNECT\r\n"
    host.write(b"hello")
    advance(1.1)                                      # (sent at the wait's end, and silence)
    # the echo server's answer before the "+++" (escape() wrote it at once: once in a full run
    # the echo came back after the escape's OK, parked)
    assert host.read_until(b"hello", 10) == b"hello"
    host.write(b"+++")
    advance(1.1)
    assert host.read_until(re.compile(rb"\r\n(OK|ERROR)\r\n")) == OK
    assert host.quiet_for(0.2) == b""
    assert host.at("AT+QIDEACT=1") + host.quiet_for(0.4) == OK + b'\r\n+QIURC: "closed",0\r\n'
    assert host.at("ATO") == b"\r\nNO CARRIER\r\n"   # nothing left to return to
    assert host.at("AT+QISTATE") == OK
    assert host.at('AT+QIACT=1;+QIOPEN=1,0,"TCP","tcp.example",7000,0,0') == OK
    assert host.read_until(b"+QIOPEN: 0,0\r\n") == b"\r\n+QIOPEN: 0,0\r\n"


def test_qideact_then_qisend_on_another_context_in_one_line(ec2x_strict, tcp_echo):
    host, advance, _ = ec2x_strict
    assert host.at('AT+QICSGP=2,1,"OTHER","","",1;+QIACT=2') == OK
    qiopen(host, 0)
    assert host.at('AT+QIOPEN=2,1,"TCP","tcp.example",7000,0,0') == OK
    assert host.read_until(b"+QIOPEN: 1,0\r\n") == b"\r\n+QIOPEN: 1,0\r\n"
    host.write(b"AT+QIDEACT=1;+QISEND=1,5\r")
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(b"hello")
    got = host.read_until(b"SEND OK\r\n") + host.quiet_for(0.5)
    assert got == b'\r\nSEND OK\r\n\r\n+QIURC: "closed",0\r\n\r\n+QIURC: "recv",1\r\n', got
    assert host.at("AT+QIRD=1,10") == b"\r\n+QIRD: 5\r\nhello\r\n" + OK
    host.write(b"AT+QIDEACT=1;+QISEND=0,5\r")           # id 0 is free now: no prompt
    assert host.read_until(ERROR) + host.quiet_for(0.3) == ERROR


def test_qideact_ssl_and_tcp_on_one_context(emulator, open_modem, tcp_echo):
    rig = Rig(emulator, open_modem)
    h = rig.host
    with rig.ssl_conn(1) as conn:
        qiopen(h, 2)
        conn.send(b"xyz")
        assert h.read_until(b'"recv",1\r\n') == b'\r\n+QSSLURC: "recv",1\r\n'
        assert h.at("AT+QIDEACT=1") + h.quiet_for(0.5) == \
            OK + b'\r\n+QIURC: "closed",2\r\n\r\n+QSSLURC: "closed",1\r\n'
        assert h.at("AT+QISTATE") == OK                 # the TCP socket is gone
        assert h.at("AT+QSSLSTATE").startswith(b'\r\n+QSSLSTATE: 1,"SSLClient","chaos.example",4443,')
        assert h.at("AT+QSSLRECV=1,10") == b"\r\n+QSSLRECV: 3\r\nxyz\r\n" + OK
        assert h.at("AT+QIACT=1") == OK
        assert h.at('AT+QSSLOPEN=1,1,1,"chaos.example",4443') == ERROR     # still taken (563)
        assert h.at('AT+QIOPEN=1,2,"TCP","tcp.example",7000,0,0') == OK
        assert h.read_until(b"+QIOPEN: 2,0\r\n") == b"\r\n+QIOPEN: 2,0\r\n"
        assert h.at("AT+QSSLCLOSE=1") == OK
    rig.close_all()


def test_qideact_twice_after_the_networks_pdpdeact(emulator, ec2x_strict, tcp_echo, udp_echo):
    host, advance, _ = ec2x_strict
    qiopen(host, 0)
    qiopen(host, 1, "UDP", UDP_HOST, UDP_PORT)
    assert emulator.control("pdp_deact", cid=1) == {"ok": True}
    got = host.read_until(b'"pdpdeact",1\r\n') + host.quiet_for(0.4)
    assert got == b'\r\n+QIURC: "pdpdeact",1\r\n\r\n+QIURC: "closed",0\r\n\r\n+QIURC: "closed",1\r\n', got
    assert host.at("AT+QIDEACT=1") + host.quiet_for(0.3) == OK
    assert host.at("AT+QISTATE") == OK
    assert host.at("AT+QIDEACT=1") + host.quiet_for(0.3) == OK
    assert host.at("AT+QICLOSE=0;+QICLOSE=1") == OK


def test_qideact_frees_udp_service_and_listener_ports_for_a_reopen_in_the_same_line(ec2x_strict):
    host, advance, _ = ec2x_strict
    up, lp = free_port(socket.SOCK_DGRAM), free_port()
    qiopen(host, 2, "UDP SERVICE", "127.0.0.1", 0, up)
    qiopen(host, 4, "TCP LISTENER", "127.0.0.1", 0, lp)
    line = (f'AT+QIDEACT=1;+QIACT=1;+QIOPEN=1,3,"UDP SERVICE","127.0.0.1",0,{up},0;'
            f'+QIOPEN=1,5,"TCP LISTENER","127.0.0.1",0,{lp},0')
    got = host.at(line) + host.read_until(b"+QIOPEN: 5,0\r\n") + host.quiet_for(0.3)
    assert got == OK + b'\r\n+QIURC: "closed",2\r\n\r\n+QIURC: "closed",4\r\n' \
        b"\r\n+QIOPEN: 3,0\r\n\r\n+QIOPEN: 5,0\r\n", got
    assert host.at("AT+QISTATE") == (
        f'\r\n+QISTATE: 3,"UDP SERVICE","127.0.0.1",0,{up},2,1,3,0,"usbmodem"\r\n'
        f'+QISTATE: 5,"TCP LISTENER","127.0.0.1",0,{lp},3,1,5,0,"usbmodem"\r\n').encode() + OK
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"ping", ("127.0.0.1", up))
        assert host.read_until(b'"recv",3\r\n') == b'\r\n+QIURC: "recv",3\r\n'
    with socket.create_connection(("127.0.0.1", lp)) as c:
        cport = c.getsockname()[1]
        assert host.read_until(b"\r\n", 5) + host.read_until(b"\r\n") == \
            f'\r\n+QIURC: "incoming",0,5,"127.0.0.1",{cport}\r\n'.encode()
    assert host.read_until(b'"closed",0\r\n') == b'\r\n+QIURC: "closed",0\r\n'     # (the client's close)
    assert host.at("AT+QICLOSE=0,0;+QICLOSE=3;+QICLOSE=5") == OK


# == 9c3ae93: a held buffer-mode "recv" dropped when push mode takes the data ===================
@pytest.fixture
def two(emulator, ec2x_strict):
    """Sockets 0 and 1 (buffer mode) to one loopback listener: (host, advance, conn0, conn1)."""
    host, advance, _ = ec2x_strict
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(4)
    emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", ls.getsockname()[1])
    qiopen(host, 0)
    c0, _ = ls.accept()
    qiopen(host, 1)
    c1, _ = ls.accept()
    yield host, advance, c0, c1
    for s in (c0, c1, ls):
        s.close()


def test_push_switch_in_the_line_drops_only_its_own_held_recv(emulator, two):
    host, advance, c0, c1 = two

    def during():
        c0.sendall(b"hi")
        c1.sendall(b"yo")
    got = busy_line(emulator, host, advance, b"+QISWTMD=0,1", during)
    assert got == CSQ + OK + b'\r\n+QIURC: "recv",1\r\n\r\n+QIURC: "recv",0,2\r\nhi\r\n', got
    c0.sendall(b"more")
    assert host.read_until(b"more\r\n") + host.quiet_for(0.2) == b'\r\n+QIURC: "recv",0,4\r\nmore\r\n'
    assert host.at("AT+QIRD=0,0;+QIRD=1,0") == b"\r\n+QIRD: 6,6,0\r\n\r\n+QIRD: 2,0,2\r\n" + OK
    assert host.at("AT+QIRD=1,10") == b"\r\n+QIRD: 2\r\nyo\r\n" + OK


def test_refused_switch_after_the_peers_close_keeps_recv_and_closed(emulator, two):
    host, advance, c0, c1 = two

    def during():
        c0.sendall(b"hi")
        c0.close()
    got = busy_line(emulator, host, advance, b"+QISWTMD=0,1", during)
    assert got == CSQ + ERROR + b'\r\n+QIURC: "recv",0\r\n\r\n+QIURC: "closed",0\r\n', got
    assert host.at("AT+QIRD=0,10") == b"\r\n+QIRD: 2\r\nhi\r\n" + OK


def test_push_then_buffer_on_one_line_leaves_one_recv(emulator, two):
    host, advance, c0, c1 = two
    got = busy_line(emulator, host, advance, b"+QISWTMD=0,1;+QISWTMD=0,0", lambda: c0.sendall(b"hi"))
    assert got == CSQ + OK + b'\r\n+QIURC: "recv",0\r\n', got
    assert host.at("AT+QIRD=0,10") == b"\r\n+QIRD: 2\r\nhi\r\n" + OK


def test_buffer_to_buffer_switch_keeps_the_recv(emulator, two):
    host, advance, c0, c1 = two
    got = busy_line(emulator, host, advance, b"+QISWTMD=0,0", lambda: c0.sendall(b"hi"))
    assert got == CSQ + OK + b'\r\n+QIURC: "recv",0\r\n', got
    assert host.at("AT+QIRD=0,10") == b"\r\n+QIRD: 2\r\nhi\r\n" + OK


def test_qiclose_in_the_line_drops_the_held_recv(emulator, two):
    """The precedent: AT+QICLOSE frees the id and forgets its held "recv" (drop_urcs)."""
    host, advance, c0, c1 = two
    got = busy_line(emulator, host, advance, b"+QICLOSE=0,0", lambda: c0.sendall(b"hi"))
    assert got == CSQ + OK, got
    assert host.at("AT+QIRD=0") == ERROR


def test_qideact_in_the_line_drops_the_held_recv_of_the_freed_socket(emulator, two):
    host, advance, c0, c1 = two
    got = busy_line(emulator, host, advance, b"+QIDEACT=1", lambda: c0.sendall(b"hi"))
    assert host.at("AT+QIRD=0") == ERROR
    # actual: OK, "recv",0, "closed",0, "closed",1
    assert got == CSQ + OK + b'\r\n+QIURC: "closed",0\r\n\r\n+QIURC: "closed",1\r\n', got


def test_trace_of_a_qideact_session_replays(tmp_path, emulator, open_modem, tcp_echo, capsys):
    path = tmp_path / "q.trace"
    host, _ = open_modem("ec2x", trace=str(path))
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
    qiopen(host, 0)
    lport = free_port()
    qiopen(host, 1, "TCP LISTENER", "127.0.0.1", 0, lport)
    host.write(b"AT+QISEND=0,2\r")
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(b"hi")
    assert host.read_until(b'"recv",0\r\n') == b'\r\nSEND OK\r\n\r\n+QIURC: "recv",0\r\n'
    assert host.at("AT+QIDEACT=1") + host.quiet_for(0.4) == \
        OK + b'\r\n+QIURC: "closed",0\r\n\r\n+QIURC: "closed",1\r\n'
    assert host.at('AT+QIACT=1;+QIOPEN=1,0,"TCP","tcp.example",7000,0,0') == OK
    assert host.read_until(b"+QIOPEN: 0,0\r\n") == b"\r\n+QIOPEN: 0,0\r\n"
    assert host.at("AT+QIDEACT=1;+QICLOSE=0") + host.quiet_for(0.4) == OK    # (AT+QICLOSE forgets the "closed")
    rs.flush(emulator)
    rs.replays(capsys, path)


# == 274f7b0: control ops as trace records ======================================================
def test_many_control_ops_recorded_in_order_refused_ones_not(tmp_path, emulator, open_modem, capsys):
    path = tmp_path / "c.trace"
    host, _ = open_modem("ec2x", trace=str(path))
    assert host.at("AT+CMEE=2") == OK
    for i in range(6):
        assert emulator.control("urc", text=f"+QIND: {i}") == {"ok": True}
    assert emulator.control("slow", command="+CSQ", ms=0) == {"ok": True}
    assert emulator.control("urc", text=7)["ok"] is False
    assert emulator.control("nosuch")["ok"] is False
    assert emulator.control("reboot", ms=-1)["ok"] is False
    assert emulator.control("urc", modem=3, text="x") == {"ok": False, "error": "no modem 3 (there are 1)"}
    assert emulator.control("state")["ok"] is True
    assert emulator.control("dns_fail", count=1) == {"ok": True}
    assert host.read_until(b"+QIND: 5\r\n") == b"".join(b"\r\n+QIND: %d\r\n" % i for i in range(6))
    assert host.at("AT+CSQ") == CSQ + OK
    rs.flush(emulator)
    controls = [(r["op"], r["args"]) for r in rs.records(path) if r["kind"] == "control"]
    assert controls == [("urc", {"text": f"+QIND: {i}"}) for i in range(6)] + \
        [("slow", {"command": "+CSQ", "ms": 0}), ("dns_fail", {"count": 1})]
    assert not [r for r in rs.records(path) if r["kind"] == "scenario"]
    rc, shown = _show(path)
    assert rc == 0
    lines = [line.split(" m0 ", 1)[1] for line in shown.splitlines() if " control " in line]
    assert lines == [f'control urc {{"text": "+QIND: {i}"}}' for i in range(6)] + \
        ['control slow {"command": "+CSQ", "ms": 0}', 'control dns_fail {"count": 1}']
    assert _show(path, "--modem", "0") == (rc, shown)
    code, out = rs.replay(capsys, path)
    assert code == 1
    assert re.search(r"\(the recording had control operations a replay does not repeat -- "
                     r"(urc at \+\d\.\d{3}s, ){5}\.\.\.: give them as a --scenario to replay them too\)\n\Z", out), out


def test_control_socket_ops_go_to_the_aimed_modems_trace(tmp_path, emulator, open_modem, ctl_path, capsys):
    p0, p1 = tmp_path / "m0.trace", tmp_path / "m1.trace"
    h0, _ = open_modem("ec2x", trace=str(p0))
    h1, _ = open_modem("ec2x", trace=str(p1))
    ctl = Ctl(ctl_path)
    try:
        assert ctl.ask(b'{"op": "urc", "modem": 1, "text": "+QIND: 1"}') == {"ok": True}
        assert ctl.ask(b'{"op": "urc", "modem": 1, "text": 5}') == \
            {"ok": False, "error": "urc: 'text' must be a string, not 5"}
        assert ctl.ask(b'{"op": "state", "modem": 1}')["ok"] is True
        assert ctl.ask(b'{"op": "reboot", "modem": 1}') == {"ok": True}
    finally:
        ctl.close()
    assert h1.read_until(b"+QIND: 1\r\n") == b"\r\n+QIND: 1\r\n"
    assert h1.read_until(b"+QUSIM: 1\r\n").startswith(b"\r\nRDY\r\n")
    assert h0.quiet_for(0.2) == b""
    rs.flush(emulator)
    assert [r for r in rs.records(p0) if r["kind"] == "control"] == []
    assert [(r["op"], r["args"], r["modem"]) for r in rs.records(p1) if r["kind"] == "control"] == \
        [("urc", {"text": "+QIND: 1"}, 1), ("reboot", {}, 1)]
    rc, shown = _show(p1, "--modem", "1")
    assert rc == 0 and [line.split(" m1 ", 1)[1] for line in shown.splitlines() if " control " in line] == \
        ['control urc {"text": "+QIND: 1"}', "control reboot {}"]
    code, out = rs.replay(capsys, p1, "--modem", "1")
    assert code == 1
    assert re.search(r"-- urc at \+\d\.\d{3}s, reboot at \+\d\.\d{3}s: give them as a --scenario", out), out


def test_control_reboot_replays_with_a_scenario(tmp_path, emulator, open_modem, capsys):
    path = tmp_path / "r.trace"
    host, _ = open_modem("ec2x", trace=str(path))
    assert host.at("AT+CMEE=2") == OK
    assert emulator.control("reboot", ms=0) == {"ok": True}
    assert host.read_until(b"PB DONE\r\n", timeout=15) == b"".join(
        b"\r\n%s\r\n" % u for u in (b"RDY", b"+CFUN: 1", b"+CPIN: READY", b"+QUSIM: 1",
                                      b"+QIND: SMS DONE", b"+QIND: PB DONE"))
    assert host.at("ATE0") == b"ATE0\r" + OK             # (the restart turned the echo on again)
    assert host.at("AT+CSQ") == CSQ + OK
    rs.flush(emulator)
    assert [(r["op"], r["args"]) for r in rs.records(path) if r["kind"] == "control"] == [("reboot", {"ms": 0})]
    scenario = tmp_path / "reboot.toml"
    scenario.write_text('[[step]]\nafter = { command = "+CMEE" }\nop = "reboot"\nms = 0\n')
    code, out = rs.replay(capsys, path, "--scenario", str(scenario))
    assert code == 0 and "no difference" in out and "control operations" not in out, out


# == 89fad22: a terminal capture's echo interrupted after "A" ====================================
def interrupted(emulator, host, first: bytes, urcs: list[str], rest: bytes, final: bytes = OK) -> bytes:
    """Type `first`, have the control API write `urcs` (each seen whole), then type `rest`:
    all the host saw from the typing on."""
    host.write(first)
    got = host.read_until(first)
    for text in urcs:
        assert emulator.control("urc", text=text) == {"ok": True}
        got += host.read_until(text.encode() + b"\r\n")
    host.write(rest)
    return got + host.read_until(final)


def test_live_capture_with_ati_and_echoes_interrupted_after_a_replays(tmp_path, emulator, open_modem):
    host, _ = open_modem("ec2x", echo=True)
    got = interrupted(emulator, host, b"A", ['+QIURC: "pdpdeact",1'], b"TI\r")
    assert got == b'A\r\n+QIURC: "pdpdeact",1\r\nTI\r\r\nQuectel\r\nEC25\r\nRevision: EC25EFAR06A06M4G\r\n' + OK
    assert host.at("ATI") == b"ATI\r\r\nQuectel\r\nEC25\r\nRevision: EC25EFAR06A06M4G\r\n" + OK
    got = interrupted(emulator, host, b"a", ['+CMTI: "SM",3', '+QIND: "FOTA","START"'], b"t+csq\r")
    assert got == b'a\r\n+CMTI: "SM",3\r\n\r\n+QIND: "FOTA","START"\r\nt+csq\r' + CSQ + OK
    assert host.at("AT+CGMR") == b"AT+CGMR\r\r\nEC25EFAR06A06M4G\r\n" + OK
    path = tmp_path / "cap.log"
    path.write_bytes(bytes(host.transcript))
    scenario = tmp_path / "urcs.toml"
    scenario.write_text(
        '[[step]]\nwhen = { command = "I" }\nop = "urc"\ntext = \'+QIURC: "pdpdeact",1\'\n'
        '[[step]]\nwhen = { command = "+CSQ" }\nop = "urc"\ntext = \'+CMTI: "SM",3\'\n'
        '[[step]]\nwhen = { command = "+CSQ" }\nop = "urc"\ntext = \'+QIND: "FOTA","START"\'\n')
    assert _replay(path, "--scenario", str(scenario)) == (0, "replayed 4 lines: no difference\n")


def capture_with_payload(tmp_path, open_modem, payload: bytes):
    """A live echo-on capture: a UDP SERVICE, AT+QISEND of `payload` (echoed), AT+CSQ,
    AT+QICLOSE; the capture's path."""
    host, _ = open_modem("ec2x", echo=True)
    line = b'AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1'
    assert host.at(line) == line + b"\r" + OK
    lport = free_port(socket.SOCK_DGRAM)
    line = b'AT+QIOPEN=1,0,"UDP SERVICE","127.0.0.1",0,%d,0' % lport
    assert host.at(line) + host.read_until(b"+QIOPEN: 0,0\r\n") == line + b"\r" + OK + b"\r\n+QIOPEN: 0,0\r\n"
    line = b'AT+QISEND=0,%d,"127.0.0.1",%d' % (len(payload), free_port(socket.SOCK_DGRAM))
    host.write(line + b"\r")
    assert host.read_until(b"> ") == line + b"\r\r\n> "
    host.write(payload)
    assert host.read_until(b"SEND OK\r\n") == payload + b"\r\nSEND OK\r\n"
    assert host.at("AT+CSQ") == b"AT+CSQ\r" + CSQ + OK
    assert host.at("AT+QICLOSE=0") == b"AT+QICLOSE=0\r" + OK
    path = tmp_path / "payload.log"
    path.write_bytes(bytes(host.transcript))
    return path


def test_live_capture_with_a_one_line_payload_replays(tmp_path, open_modem):
    path = capture_with_payload(tmp_path, open_modem, b"Apple")
    assert _replay(path) == (0, "replayed 6 lines: no difference\n")


def test_live_capture_with_a_two_line_payload_replays(tmp_path, open_modem):
    path = capture_with_payload(tmp_path, open_modem, b"zz\r\nbb")
    assert _replay(path) == (0, "replayed 6 lines: no difference\n")


def test_capture_payload_starting_with_a_is_not_taken_for_an_interrupted_echo(tmp_path, open_modem):
    from emulator.tools.trace import _typed_across_urcs
    path = capture_with_payload(tmp_path, open_modem, b"zz\r\nAb\r\nX\r\nY\rW")
    text = path.read_bytes().decode("latin-1")
    assert "> zz\r\nAb\r\nX\r\nY\rW\r\nSEND OK\r\n" in text
    assert _typed_across_urcs(text) == text          # actual: '> zz\r\nAbY\r\nX\r\n\rW\r\nSEND OK'


def test_ml302_held_recv_survives_another_sockets_transparent_open(emulator, open_modem):
    """ML302 (no AT+QISWTMD): socket 1's "recv" held by a busy line stays when the same line
    opens socket 2 transparently (SocketLink drops only socket 2's held "recv"); it comes
    after the escape and the data are readable."""
    rig = Rig3(emulator, open_modem, "ml302")
    try:
        h = rig.host
        srv = rig.server(mode="sink")
        rig.open(1)
        conn = conn_of(srv)
        assert emulator.control("slow", command="+CSQ", ms=800) == {"ok": True}
        h.write(f'AT+CSQ;+QSSLOPEN=2,0,"{HOST3}",443,1\r'.encode())
        time.sleep(0.2)
        conn.send(b"hello")
        assert h.read_until(re.compile(rb"CONNECT\r\n|ERROR\r\n"), 20) == b"\r\n+CSQ: 26,99\r\n\r\nCONNECT\r\n"
        time.sleep(1.2)
        h.write(b"+++")
        time.sleep(1.2)
        assert h.read_until(OK) + h.quiet_for(0.4) == OK + b'\r\n+QSSLURC: "recv",1,1\r\n'
        assert h.at("AT+QSSLRECV=1,1,100") == b"\r\n+QSSLRECV: 106.12.79.254:443,TCP,5\r\nhello\r\n" + OK
    finally:
        rig.close_all()
