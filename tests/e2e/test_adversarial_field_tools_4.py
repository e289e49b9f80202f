"""Adversarial tests of the field tools, fourth pass (not repeating test_adversarial_field_tools.py,
_2.py, _3.py, _fuzz.py, test_control.py, test_scenario.py, test_plugin.py, test_many_modems.py).

Covered here:

- the control socket's framing: 300 requests (good, bad, blank, CR LF ended) in ONE write
  answered one JSON line each, in order; a request written one byte at a time; two clients
  racing the same `drop` (exactly one succeeds, the host sees one URC) and the same
  `send_fail` (the count is replaced, not added);
- faults aimed at the last modem of three in one process (send_fail, slow, dns_fail,
  uart_noise, drop, reboot): only that modem's host sees them, and "modem": 3 is a clear error;
  a CLI `--count 3 --scenario` whose steps name modems 1 and 2 fires on those hosts only;
- faults inside a `> ` data prompt on both profiles (drop, pdp_deact, register, dtr): nothing
  inside the prompt, then the send's one result and the URCs; an ML302 reboot inside a prompt;
  a socket dropped / the PDP lost while an EC2x AT+QFUPL upload waits for its bytes;
- a reboot while a TLS handshake stalls, on both profiles, then the host's next commands typed
  one byte at a time; a command typed ahead while a transparent open stalls runs after its error;
- online (transparent) streams, SSL and TCP, across `net` latency + loss, escaped with +++ and
  resumed with ATO; an echo in flight during the escape waits for ATO (or is lost with a drop);
  a reboot with bytes in flight; ATO after a reboot has nothing to return to;
- a "+" the escape detector holds (it may begin "+++") when the connection ends another way:
  lost with a connection the network ended, sent before a DTR hang-up, and (bug) sent after a
  reboot;
- noisy (uart_noise) output pending at a reboot never follows the boot lines;
- scenario steps (`when` / `after`) triggered by commands typed a byte at a time, an edited
  line (backspace), `A/`, lower case and a ";" chain;
- the pytest plugin's fixtures used as README allows: a second modem on the handle's emulator,
  manual time, a scenario aimed at each modem, the trace tail, a --uart modem rebooted while
  no host holds the port;
- leaks: a CLI emulator's descriptors and threads after many control clients, opens, drops and
  reboots are back where they were;
- `drop` close/rst of a plain UDP socket is refused (a bug this round found, fixed).

Every name dialled is routed to 127.0.0.1.  The two bugs this round found are fixed ("Was a
bug, fixed" above their tests)."""
from __future__ import annotations

import json
import os
import re
import socket
import threading
import time

import pytest

from emulator.storage.checksum import xor16
from emulator.testing.host import Host
from emulator.tools.control import ControlServer
from tests.e2e.cli_support import start, stop
from tests.e2e.test_adversarial_field_tools_2 import _escape

HOST = "echo.example"           # routed to the `echo` fixture's server (tests/conftest.py)
RESULT = re.compile(rb"\r\n(SEND OK|SEND FAIL|ERROR)\r\n")
EC2X_BOOT = b"\r\nRDY\r\n\r\n+CFUN: 1\r\n\r\n+CPIN: READY\r\n\r\n+QUSIM: 1\r\n\r\n+QIND: SMS DONE\r\n\r\n+QIND: PB DONE\r\n"


# -- helpers ---------------------------------------------------------------------------------
def _open(host, client_id: int = 1, mode: int = 0) -> None:
    assert host.at(f'AT+QSSLOPEN=1,1,{client_id},"{HOST}",443,{mode}') == b"\r\nOK\r\n"
    host.seen(f"+QSSLOPEN: {client_id},0\r\n".encode(), timeout=5)


def _ml302_on(host) -> None:
    assert host.at('AT+CGDCONT=1,"IP","CMNET"') == b"\r\nOK\r\n"
    assert host.at("AT+CGACT=1,1").endswith(b"OK\r\n")


def _ml302_open(host, ssid: int = 0) -> None:
    assert host.at(f'AT+QSSLOPEN={ssid},0,"{HOST}",443,0') == b"\r\nOK\r\n"
    host.seen(f"+QSSLOPEN: {ssid},0\r\n".encode(), timeout=5)


def _recv_all(host, client_id: int = 1) -> bytes:
    got = host.at(f"AT+QSSLRECV={client_id},1500")
    m = re.search(rb"\+QSSLRECV: (\d+)\r\n", got)
    assert m, got
    return got[m.end():m.end() + int(m.group(1))]


def _bytewise(host, text: bytes) -> None:
    """Write `text` one byte per write, as a slow host's UART driver does."""
    for i in range(len(text)):
        host.write(text[i:i + 1])


class Ctl:
    """A control-socket client reading answers a line at a time."""

    def __init__(self, path) -> None:
        self.s = socket.socket(socket.AF_UNIX)
        self.s.settimeout(10)
        self.s.connect(str(path))
        self.buf = b""

    def line(self) -> dict:
        while b"\n" not in self.buf:
            chunk = self.s.recv(65536)
            assert chunk, f"control socket closed; had {self.buf[:200]!r}"
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        assert not line.endswith(b"\r")
        return json.loads(line)

    def ask(self, request: bytes) -> dict:
        self.s.sendall(request + b"\n")
        return self.line()

    def close(self) -> None:
        self.s.close()


@pytest.fixture
def ctl_path(emulator, tmp_path):
    """A ControlServer on the `emulator` fixture's loop (add modems before using it)."""
    path = tmp_path / "c.sock"
    server = ControlServer(emulator.emulator, path)
    emulator.call(server.start())
    yield path
    emulator.call(server.close())


# == the control socket's framing =============================================================
def test_three_hundred_requests_in_one_write_get_one_answer_line_each_in_order(emulator, ec2x_on, ctl_path,
                                                                                 strict_log):
    host, port = ec2x_on
    requests, expect = [], []
    for i in range(300):
        k = i % 6
        if k == 0:
            requests.append(b'{"op": "urc", "text": "+QIND: P%d"}\n' % i)
            expect.append(("ok", None))
        elif k == 1:
            requests.append(b'{"op": "state"}\r\n')                    # socat's crlf option
            expect.append(("state", None))
        elif k == 2:
            requests.append(b'{"op": "bogus%d"}\n' % i)
            expect.append(("err", b"bogus%d" % i))
        elif k == 3:
            requests.append(b'\n  \r\n{"op": "state", "modem": 7}\n')   # blank lines: no answer
            expect.append(("err", b"no modem 7"))
        elif k == 4:
            requests.append(b'{"op": "urc", "text": "+QIND: P%d"}\n' % i)
            expect.append(("ok", None))
        else:
            requests.append(b'{"op": "slow", "command": "+NOPE"}\n')
            expect.append(("err", None))
    c = Ctl(ctl_path)
    try:
        c.s.sendall(b"".join(requests))
        for kind, word in expect:
            answer = c.line()
            if kind == "ok":
                assert answer == {"ok": True}, answer
            elif kind == "state":
                assert answer["ok"] is True and answer["profile"] == "ec2x", answer
            else:
                assert answer["ok"] is False and "error" in answer, answer
                if word:
                    assert word.decode() in answer["error"], answer
        c.s.settimeout(0.3)
        with pytest.raises(socket.timeout):                          # nothing more: one answer each
            c.line()
        c.s.settimeout(10)
        # a request written one byte per write is still one request, one answer
        for b in b'{"op": "urc", "text": "+QIND: SLOW"}\n':
            c.s.send(bytes([b]))
        assert c.line() == {"ok": True}
    finally:
        c.close()
    numbers = [i for i in range(300) if i % 6 in (0, 4)]
    want = b"".join(b"\r\n+QIND: P%d\r\n" % i for i in numbers) + b"\r\n+QIND: SLOW\r\n"
    assert host.read_until(b"+QIND: SLOW\r\n", timeout=10) == want
    assert host.at("AT") == b"\r\nOK\r\n"


def test_two_clients_racing_the_same_drop_one_wins_and_the_host_sees_one_urc(emulator, ec2x_on, echo, ctl_path,
                                                                             strict_log):
    host, port = ec2x_on
    for round_ in range(4):
        _open(host, 1)
        clients = [Ctl(ctl_path), Ctl(ctl_path)]
        barrier = threading.Barrier(2)
        answers: list = [None, None]

        def race(n: int) -> None:
            barrier.wait(5)
            answers[n] = clients[n].ask(b'{"op": "drop", "socket": 1, "how": "rst"}')
        threads = [threading.Thread(target=race, args=(n,)) for n in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
        for c in clients:
            c.close()
        oks = [a for a in answers if a == {"ok": True}]
        refused = [a for a in answers if a and a.get("ok") is False]
        assert len(oks) == 1 and len(refused) == 1, answers
        assert "not connected" in refused[0]["error"], refused
        host.seen(b'+QSSLURC: "closed",1\r\n', timeout=5)
        assert b"closed" not in host.quiet_for(0.3)                    # one URC, not two
        assert host.at("AT+QSSLCLOSE=1") == b"\r\nOK\r\n"
    # two clients setting send_fail at once: the count is replaced, never added
    _open(host, 1)
    a, b = Ctl(ctl_path), Ctl(ctl_path)
    try:
        a.s.sendall(b'{"op": "send_fail", "socket": 1, "count": 1}\n')
        b.s.sendall(b'{"op": "send_fail", "socket": 1, "count": 1}\n')
        assert a.line() == {"ok": True} and b.line() == {"ok": True}
    finally:
        a.close()
        b.close()
    assert host.send_data(1, b"gone!") == b"\r\nSEND FAIL\r\n"
    assert host.send_data(1, b"kept!") == b"\r\nSEND OK\r\n"
    assert echo.wait_received(5, timeout=5) == b"kept!"


# == many modems: faults aimed at the last one ===============================================
def test_faults_aimed_at_modem_2_of_three_touch_only_modem_2(emulator, open_modem, echo, ctl_path, strict_log):
    modems = []
    for _ in range(3):
        host, port = open_modem("ec2x", manual_time=True)
        assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
        _open(host, 1)
        modems.append((host, port))
    (h0, p0), (h1, p1), (h2, p2) = modems
    c = Ctl(ctl_path)
    try:
        for req in (b'{"op": "send_fail", "modem": 2, "socket": 1, "count": 1}',
                    b'{"op": "slow", "modem": 2, "command": "+CSQ", "ms": 3000}',
                    b'{"op": "dns_fail", "modem": 2, "count": 1}',
                    b'{"op": "uart_noise", "modem": 2, "on": true, "seed": 4}'):
            assert c.ask(req) == {"ok": True}, req
        bad = c.ask(b'{"op": "drop", "modem": 3, "socket": 1, "how": "rst"}')
        assert bad["ok"] is False and "no modem 3" in bad["error"], bad
        # modems 0 and 1: untouched
        for h in (h0, h1):
            assert h.send_data(1, b"ok-0") == b"\r\nSEND OK\r\n"
            h.seen(b'+QSSLURC: "recv",1\r\n', timeout=5)
            assert re.fullmatch(rb"\r\n\+CSQ: \d+,\d+\r\n\r\nOK\r\n", h.at("AT+CSQ"))
            _open(h, 2)
        # modem 2: each fault, exactly once
        assert h2.send_data(1, b"no-2") == b"\r\nSEND FAIL\r\n"
        h2.write("AT+CSQ\r")
        emulator.wait_received(p2, h2.written)
        assert h2.quiet_for(0.3) == b""
        emulator.advance(p2, 3.1)
        assert re.fullmatch(rb"\r\n\+CSQ: \d+,\d+\r\n\r\nOK\r\n", h2.read_until(b"OK\r\n", timeout=5))
        assert h2.at(f'AT+QSSLOPEN=1,1,2,"{HOST}",443,0') == b"\r\nOK\r\n"
        h2.seen(b"+QSSLOPEN: 2,565\r\n", timeout=5)
        # a drop and a reboot of modem 2: the others' sockets live on, their hosts hear nothing
        assert c.ask(b'{"op": "drop", "modem": 2, "socket": 1, "how": "rst"}') == {"ok": True}
        h2.seen(b'+QSSLURC: "closed",1\r\n', timeout=5)
        assert c.ask(b'{"op": "reboot", "modem": 2, "ms": 0}') == {"ok": True}
        emulator.advance(p2, 1)
        assert h2.read_until(b"+QIND: PB DONE\r\n", timeout=5).endswith(EC2X_BOOT)
        assert c.ask(b'{"op": "uart_noise", "modem": 2, "on": false}') == {"ok": True}
        for n, h in ((0, h0), (1, h1)):
            assert h.quiet_for(0.3) == b"", n
            state = c.ask(b'{"op": "state", "modem": %d}' % n)
            assert [(s["id"], s["state"]) for s in state["sockets"]] == [(1, "CONNECTED"), (2, "CONNECTED")], state
            assert state["pdp"][0]["active"] is True
        state2 = c.ask(b'{"op": "state", "modem": 2}')
        assert state2["sockets"] == [] and state2["pdp"][0]["active"] is False, state2
    finally:
        c.close()
    # and the others still carry data end to end
    for h in (h0, h1):
        assert _recv_all(h, 1) == b"ok-0"


# == faults inside data prompts and uploads ====================================================
def test_ml302_drop_inside_a_data_prompt_the_close_urc_comes_after_the_result(emulator, open_modem, echo,
                                                                             strict_log):
    host, port = open_modem("ml302", manual_time=True)
    _ml302_on(host)
    _ml302_open(host, 0)
    host.write("AT+QSSLSEND=0\r")
    assert host.read_until(b"> ", timeout=5) == b"\r\n> "
    host.write(b"abc")
    emulator.wait_received(port, host.written)
    assert emulator.control("drop", socket=0, how="rst") == {"ok": True}
    assert host.quiet_for(0.3) == b""                                # (ATE0) no URC inside the prompt
    host.write(b"def\x1a")
    got = host.read_until(b'+QSSLURC: "close",0\r\n', timeout=5)
    # the send's one result, then the URC; never the URC in between
    assert re.fullmatch(rb'\r\n(SEND OK|SEND FAIL|ERROR)\r\n\r\n\+QSSLURC: "close",0\r\n', got), got
    assert b"close" not in host.quiet_for(0.3)
    assert host.at("AT+QSSLSEND=0").endswith(b"ERROR\r\n")          # no connection any more
    assert host.at("AT") == b"\r\nOK\r\n"


def test_ml302_reboot_inside_a_data_prompt_abandons_it_silently(emulator, open_modem, echo, strict_log):
    host, port = open_modem("ml302", manual_time=True)
    _ml302_on(host)
    _ml302_open(host, 0)
    host.write("AT+QSSLSEND=0\r")
    assert host.read_until(b"> ", timeout=5) == b"\r\n> "
    host.write(b"half")
    emulator.wait_received(port, host.written)
    assert emulator.control("reboot", ms=0) == {"ok": True}
    emulator.advance(port, 5)
    boot = host.quiet_for(0.5)
    assert b"SEND" not in boot and b"QSSLURC" not in boot and b"ERROR" not in boot, boot
    # the prompt is gone: the rest of the host's "data" is a command line (echo is back on)
    _bytewise(host, b"AT\r")
    assert host.read_until(b"OK\r\n", timeout=5) == b"AT\r\r\nOK\r\n"
    conn = echo.wait_done(0, timeout=10)                             # the server sees the end
    assert bytes(conn.received) == b""                               # nothing of the prompt left
    state = emulator.control("state")
    assert state["sockets"] == [] and state["mode"] == "COMMAND", state


def test_drop_and_pdp_loss_during_an_upload_wait_for_its_ok(emulator, ec2x_on, echo, strict_log):
    host, port = ec2x_on
    _open(host, 1)
    data = bytes(range(256)) * 2
    host.write(f'AT+QFUPL="UFS:up.bin",{len(data)}\r')
    host.read_until(b"\r\nCONNECT\r\n", timeout=5)
    host.write(data[:200])
    emulator.wait_received(port, host.written)
    assert emulator.control("drop", socket=1, how="rst") == {"ok": True}
    assert emulator.control("pdp_deact", cid=1) == {"ok": True}
    assert host.quiet_for(0.3) == b""                               # nothing inside the upload
    _bytewise(host, data[200:260])
    host.write(data[260:])
    got = host.read_until(b'+QIURC: "pdpdeact",1\r\n', timeout=5)
    assert got == (f"\r\n+QFUPL: {len(data)},{xor16(data):x}\r\n\r\nOK\r\n".encode()
                   + b'\r\n+QSSLURC: "closed",1\r\n\r\n+QIURC: "pdpdeact",1\r\n'), got
    assert b"closed" not in host.quiet_for(0.3)                     # the dropped socket: one URC
    assert host.at('AT+QFLST="UFS:up.bin"') == f'\r\n+QFLST: "up.bin",{len(data)}\r\n\r\nOK\r\n'.encode()
    assert host.at("AT+QSSLCLOSE=1") == b"\r\nOK\r\n"


# == a reboot while a TLS handshake stalls, then a byte-at-a-time host =========================
@pytest.mark.parametrize("profile", ["ec2x", "ml302"])
def test_reboot_during_a_stalled_handshake_then_commands_typed_byte_by_byte(emulator, open_modem, echo, profile,
                                                                          strict_log):
    host, port = open_modem(profile, manual_time=True)
    if profile == "ec2x":
        assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
        opener, result = f'AT+QSSLOPEN=1,1,1,"{HOST}",443,0', b"+QSSLOPEN"
    else:
        _ml302_on(host)
        opener, result = f'AT+QSSLOPEN=0,0,"{HOST}",443,0,30', b"+QSSLOPEN"
    assert emulator.control("handshake_stall", count=1) == {"ok": True}
    assert host.at(opener) == b"\r\nOK\r\n"
    echo.wait_connections(1, timeout=5)
    assert emulator.control("reboot", ms=0) == {"ok": True}
    emulator.advance(port, 2)
    emulator.advance(port, 60)                                       # past any open's timeout
    boot = host.quiet_for(0.5)
    if profile == "ec2x":
        assert boot == EC2X_BOOT, boot
    assert result not in boot, boot
    conn = echo.wait_done(0, timeout=10)                             # the stalled TCP connection ended
    assert not conn.handshake_done
    # after the restart echo is on again (ATE0 was not saved): each byte comes back as typed
    for b in b"AT+CSQ\r":
        host.write(bytes([b]))
        assert host.read_exactly(1, timeout=5) == bytes([b])
    assert re.fullmatch(rb"\r\n\+CSQ: \d+,\d+\r\n\r\nOK\r\n", host.read_until(b"OK\r\n", timeout=5))
    _bytewise(host, b"ATE0\r\n")                                      # CR LF: the LF is no second line
    assert host.read_until(b"OK\r\n", timeout=5) == b"ATE0\r\r\nOK\r\n"
    assert host.quiet_for(0.3) == b""
    state = emulator.control("state")
    assert state["sockets"] == [] and not any(c["active"] for c in state["pdp"]), state


# == an online stream across latency and loss, escaped and resumed ===========================
def _pump(emulator, port, host, n: int, step: float = 0.25, rounds: int = 400) -> bytes:
    """Move the manual clock in small steps until `n` bytes are pending; return them."""
    for _ in range(rounds):
        emulator.advance(port, step)
        host._fill()
        host._fill()
        if len(host.pending) >= n:
            break
    return host.read_exactly(n, timeout=5)


def test_an_online_stream_over_latency_and_loss_escapes_and_resumes_exactly(emulator, ec2x_on, echo, strict_log):
    host, port = ec2x_on
    assert emulator.control("net", latency_ms=150, loss=0.2, seed=11) == {"ok": True}
    host.write(f'AT+QSSLOPEN=1,1,1,"{HOST}",443,2\r')
    emulator.wait_received(port, host.written)
    assert _pump(emulator, port, host, len(b"\r\nCONNECT\r\n")) == b"\r\nCONNECT\r\n"
    blob = bytes(range(256)) * 12 + b"+++AT\r\n" * 20
    for k in range(0, len(blob), 500):
        host.write(blob[k:k + 500])
    emulator.wait_received(port, host.written)
    assert _pump(emulator, port, host, len(blob)) == blob
    assert _escape(emulator, port, host) == b"\r\nOK\r\n"
    assert host.quiet_for(0.2) == b""
    state = emulator.control("state")["sockets"]
    assert [(s["id"], s["state"], s["access_mode"]) for s in state] == [(1, "CONNECTED", 2)], state
    assert host.at("ATO") == b"\r\nCONNECT\r\n"
    host.write(b"after-ato")
    emulator.wait_received(port, host.written)
    assert _pump(emulator, port, host, 9) == b"after-ato"
    assert _escape(emulator, port, host) == b"\r\nOK\r\n"
    assert emulator.control("net") == {"ok": True}
    assert host.at("AT+QSSLCLOSE=1") == b"\r\nOK\r\n"
    conn = echo.wait_done(0, timeout=10)
    assert bytes(conn.received) == blob + b"after-ato"              # each byte once, in order


# == scenario triggers from a byte-at-a-time host =============================================
def test_scenario_when_and_after_steps_fire_on_commands_typed_a_byte_at_a_time(emulator, ec2x_on, echo,
                                                                             strict_log):
    host, port = ec2x_on
    _open(host, 1)
    run = emulator.run_scenario({"step": [
        {"when": {"command": "+QSSLSEND", "socket": 1, "count": 2}, "op": "send_fail", "socket": 1},
        {"after": {"command": "+CSQ", "kind": "exec", "count": 2}, "op": "urc", "text": "+QIND: AFTER"},
        {"when": {"command": "+CSQ", "kind": "test"}, "op": "urc", "text": "+QIND: WHEN"},
    ]})
    results = []
    for payload in (b"one", b"two", b"six"):
        _bytewise(host, b"AT+QSSLSEND=1,3\r")         # (CR alone, as the host's other lines)
        host.read_until(b"> ", timeout=5)
        _bytewise(host, payload)
        results.append(host.read_until(RESULT, timeout=5))
    assert results == [b"\r\nSEND OK\r\n", b"\r\nSEND FAIL\r\n", b"\r\nSEND OK\r\n"]
    _bytewise(host, b"AT+CSQ\r\n")
    first = host.read_until(b"OK\r\n", timeout=5)
    assert b"QIND" not in first + host.quiet_for(0.2)
    _bytewise(host, b"AT+CSQ\r\n")
    second = host.read_until(b"+QIND: AFTER\r\n", timeout=5)
    assert re.fullmatch(rb"\r\n\+CSQ: \d+,\d+\r\n\r\nOK\r\n\r\n\+QIND: AFTER\r\n", second), second
    _bytewise(host, b"AT+CSQ=?\r\n")
    third = host.read_until(b"OK\r\n", timeout=5)
    assert third.startswith(b"\r\n+QIND: WHEN\r\n\r\n+CSQ: "), third        # a `when` URC: before its answer
    fired = emulator.run(lambda: [(f["op"], f["ok"]) for f in run.fired])
    assert fired == [("send_fail", True), ("urc", True), ("urc", True)], fired
    host.seen(b'+QSSLURC: "recv",1\r\n', timeout=5)
    got = b""
    deadline = time.monotonic() + 5
    while len(got) < 6 and time.monotonic() < deadline:
        got += _recv_all(host)
    assert got == b"onesix"                                              # the failed send never went


# == the plugin's fixtures, several modems, manual time, traces ===============================
@pytest.mark.modem_manual_time
@pytest.mark.modem_profile("ml302")
def test_plugin_handle_with_a_second_modem_scenario_per_modem_and_trace(modem, tmp_path):
    second = modem.emulator.add_modem("ec2x", state_dir=tmp_path / "second", manual_time=True)
    h0, h1 = Host(modem.path), Host(second.path)
    try:
        assert h0.at("ATE0").endswith(b"OK\r\n") and h1.at("ATE0").endswith(b"OK\r\n")
        assert modem.control("state")["profile"] == "ml302"
        assert modem.control("state", modem=1)["profile"] == "ec2x"
        assert modem.control("state", modem=2)["ok"] is False
        run = modem.scenario({"step": [
            {"at": 5, "op": "urc", "text": "+QIND: FOR0"},
            {"at": 5, "modem": 1, "op": "urc", "text": "+QIND: FOR1"},
            {"after": {"command": "+CGMR"}, "modem": 1, "op": "urc", "text": "+QIND: CGMR1"},
        ]})
        modem.advance(5.5)                                        # modem 0's clock only
        assert h0.read_until(b"+QIND: FOR0\r\n", timeout=5) == b"\r\n+QIND: FOR0\r\n"
        assert h1.quiet_for(0.3) == b""
        modem.emulator.advance(second, 5.5)
        assert h1.read_until(b"+QIND: FOR1\r\n", timeout=5) == b"\r\n+QIND: FOR1\r\n"
        assert h0.at("AT+CGMR").endswith(b"OK\r\n")                # modem 0's CGMR is not modem 1's trigger
        assert b"CGMR1" not in h0.quiet_for(0.2) + h1.quiet_for(0.2)
        got = h1.at("AT+CGMR") + h1.read_until(b"+QIND: CGMR1\r\n", timeout=5)
        assert got.endswith(b"OK\r\n\r\n+QIND: CGMR1\r\n"), got
        assert len(modem.emulator.run(lambda: list(run.fired))) == 3
        assert modem.control("reboot", modem=1, ms=0) == {"ok": True}
        modem.emulator.advance(second, 1)
        assert h1.read_until(b"+QIND: PB DONE\r\n", timeout=5).endswith(EC2X_BOOT)
        assert h0.quiet_for(0.3) == b""
        tail = "\n".join(modem.trace_tail(200))
        assert "FOR0" in tail and "FOR1" not in tail and "CGMR1" not in tail, tail
    finally:
        h0.close()
        h1.close()


# == leaks =====================================================================================
def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _settles(what, target: int, timeout: float = 15) -> int:
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value <= target or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def test_a_cli_emulator_holds_no_more_fds_or_threads_after_many_faults(tmp_path, pki):
    from emulator.testing.peers import TlsServer
    ctl, log_path = tmp_path / "c.sock", tmp_path / "emulator.log"
    with TlsServer(pki.server, mode="echo") as server, open(log_path, "w") as log:
        proc = start("--offline", "--count", "2", "--link", str(tmp_path / "m-{n}"),
                     "--state-dir", str(tmp_path / "st"), "--control", str(ctl), "--log-level", "INFO",
                     "--route", f"{HOST}:443=127.0.0.1:{server.port}", stderr=log)
        hosts: list[Host] = []
        try:
            devs = [proc.stdout.readline().strip() for _ in range(2)]
            assert all(devs), devs
            hosts = [Host(d) for d in devs]
            h = hosts[0]
            assert h.at("ATE0").endswith(b"OK\r\n")
            assert h.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"

            def cycle(i: int) -> None:
                c = Ctl(ctl)
                try:
                    _open(h, 1)
                    assert h.send_data(1, b"x") == b"\r\nSEND OK\r\n"
                    how = ("rst", "close", "blackhole")[i % 3]
                    assert c.ask(b'{"op": "drop", "socket": 1, "how": "%s"}' % how.encode()) == {"ok": True}
                    if how != "blackhole":
                        h.seen(b'+QSSLURC: "closed",1\r\n', timeout=5)
                    assert h.at("AT+QSSLCLOSE=1,0", timeout=20).endswith(b"OK\r\n")
                    assert c.ask(b'{"op": "connect_refuse", "count": 1}') == {"ok": True}
                    assert h.at(f'AT+QSSLOPEN=1,1,2,"{HOST}",443,0') == b"\r\nOK\r\n"
                    h.seen(b"+QSSLOPEN: 2,566\r\n", timeout=5)
                    assert c.ask(b'{"op": "state", "modem": 1}')["ok"] is True
                    half = socket.socket(socket.AF_UNIX)
                    half.connect(str(ctl))
                    half.sendall(b'{"op": "sta')                          # gone mid-request
                    half.close()
                    assert c.ask(b'{"op": "reboot", "modem": 1, "ms": 0}') == {"ok": True}
                finally:
                    c.close()

            cycle(0)                                                     # warm-up: workers, caches
            time.sleep(0.5)
            fds0 = _fds(proc.pid)
            threads0 = _threads(proc.pid)
            for i in range(1, 13):
                cycle(i)
            assert _settles(lambda: _fds(proc.pid), fds0) <= fds0, os.listdir(f"/proc/{proc.pid}/fd")
            assert _settles(lambda: _threads(proc.pid), threads0) <= threads0
            assert proc.poll() is None
            assert stop(proc) == 0
            assert not ctl.exists()
        finally:
            for host in hosts:
                host.close()
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    text = log_path.read_text()
    assert "Traceback" not in text and " ERROR " not in text, text[-3000:]


# == data on its way through a slow link when the port leaves online mode ======================
def test_echo_in_flight_during_the_escape_waits_for_ato_and_comes_first(emulator, ec2x_on, echo, strict_log):
    host, port = ec2x_on
    host.write(f'AT+QSSLOPEN=1,1,1,"{HOST}",443,2\r')
    host.read_until(b"\r\nCONNECT\r\n", timeout=5)
    assert emulator.control("net", latency_ms=2000) == {"ok": True}
    host.write(b"abc")
    assert _escape(emulator, port, host) == b"\r\nOK\r\n"             # t=2.2 s: "abc" just reached the server
    echo.wait_received(3, timeout=5)
    for _ in range(100):                                             # its echo lands in command mode
        emulator.advance(port, 0.5)
        if emulator.control("state")["sockets"][0]["unread"] >= 3:
            break
        time.sleep(0.02)
    assert emulator.control("state")["sockets"][0]["unread"] == 3
    assert host.quiet_for(0.3) == b""                                # no URC, no data
    assert host.at("AT+QSSLRECV=1,100").endswith(b"ERROR\r\n")       # not readable in command mode
    assert host.at("ATO") == b"\r\nCONNECT\r\n"
    assert host.read_exactly(3, timeout=5) == b"abc"                 # the waiting bytes first
    host.write(b"d")
    emulator.wait_received(port, host.written)
    assert _pump(emulator, port, host, 1) == b"d"
    assert host.quiet_for(0.2) == b""


def test_a_drop_while_the_echo_is_in_flight_after_the_escape_is_closed_alone(emulator, ec2x_on, echo, strict_log):
    host, port = ec2x_on
    host.write(f'AT+QSSLOPEN=1,1,1,"{HOST}",443,2\r')
    host.read_until(b"\r\nCONNECT\r\n", timeout=5)
    assert emulator.control("net", latency_ms=2000) == {"ok": True}
    host.write(b"lost-on-the-way")
    assert _escape(emulator, port, host) == b"\r\nOK\r\n"
    echo.wait_received(15, timeout=5)
    assert emulator.control("drop", socket=1, how="rst") == {"ok": True}
    emulator.advance(port, 5)                                        # the echo's time comes and goes
    # nothing waited when the connection ended: only "closed", and the data in flight is gone
    assert host.read_until(b'+QSSLURC: "closed",1\r\n', timeout=5) == b'\r\n+QSSLURC: "closed",1\r\n'
    assert host.quiet_for(0.3) == b""
    assert host.at("ATO") == b"\r\nNO CARRIER\r\n"
    m = re.search(rb'\+QSSLSTATE: 1,"SSLClient","echo.example",443,\d+,(\d),1,1,(\d),', host.at("AT+QSSLSTATE=1"))
    assert m and m.group(1) == b"4" and m.group(2) == b"2", m
    assert host.at("AT+QSSLCLOSE=1") == b"\r\nOK\r\n"


def test_a_reboot_with_echo_in_flight_online_leaves_only_the_boot_lines(emulator, ec2x_on, echo, strict_log):
    host, port = ec2x_on
    host.write(f'AT+QSSLOPEN=1,1,1,"{HOST}",443,2\r')
    host.read_until(b"\r\nCONNECT\r\n", timeout=5)
    assert emulator.control("net", latency_ms=500, kbps=8) == {"ok": True}
    blob = bytes(range(256)) * 4
    host.write(blob)
    emulator.wait_received(port, host.written)
    emulator.advance(port, 0.6)                                      # part of it on its way, part held
    assert emulator.control("reboot", ms=0) == {"ok": True}
    emulator.advance(port, 10)
    got = host.quiet_for(0.5)
    assert got.endswith(EC2X_BOOT), got[-200:]
    assert blob[:1] not in got[got.find(b"\r\nRDY"):].replace(EC2X_BOOT, b"")   # nothing after the power went
    assert host.at("AT").endswith(b"OK\r\n")
    emulator.advance(port, 10)
    assert host.quiet_for(0.3) == b""


def test_noisy_output_pending_at_a_reboot_never_follows_the_boot_lines(emulator, ec2x_on, strict_log):
    host, port = ec2x_on
    assert emulator.control("uart_noise", on=True, seed=3) == {"ok": True}
    lines = [b"+QIND: NOISE%03d %s" % (i, b"x" * 150) for i in range(60)]
    for line in lines:
        assert emulator.control("urc", text=line.decode()) == {"ok": True}
    assert emulator.control("reboot", ms=0) == {"ok": True}
    emulator.advance(port, 1)
    got = host.read_until(b"+QIND: PB DONE\r\n", timeout=10) + host.quiet_for(0.5)
    assert got.endswith(EC2X_BOOT), got[-300:]
    before = got[:-len(EC2X_BOOT)]
    stream = b"".join(b"\r\n" + line + b"\r\n" for line in lines)
    assert stream.startswith(before), before[-200:]                   # a prefix, cut where the power went
    assert emulator.control("uart_noise", on=False) == {"ok": True}
    assert host.at("ATE0").endswith(b"OK\r\n")


# == a "+" the escape detector holds back when the connection ends another way =================
def _online_with_a_held_plus(emulator, open_modem, profile):
    """An online TLS echo connection whose host wrote "hi" (echoed back), a guard time of
    silence, then one "+": the escape detector holds it (it may begin "+++")."""
    host, port = open_modem(profile, manual_time=True)
    if profile == "ec2x":
        assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
        host.write(f'AT+QSSLOPEN=1,1,1,"{HOST}",443,2\r')
        sid = 1
    else:
        _ml302_on(host)
        host.write(f'AT+QSSLOPEN=0,0,"{HOST}",443,1\r')
        sid = 0
    assert host.read_until(b"CONNECT\r\n", timeout=5) == b"\r\nCONNECT\r\n"
    host.write(b"hi")
    assert host.read_exactly(2, timeout=5) == b"hi"
    emulator.wait_received(port, host.written)
    emulator.advance(port, 1.1)                                      # the guard time before a "+++"
    host.write(b"+")
    emulator.wait_received(port, host.written)
    assert host.quiet_for(0.2) == b""                                # held: not yet data
    return host, port, sid


@pytest.mark.parametrize("profile", ["ec2x", "ml302"])
@pytest.mark.parametrize("fault", ["drop", "pdp_deact", "register"])
def test_a_held_plus_is_lost_with_a_connection_the_network_ended(emulator, open_modem, echo, profile, fault,
                                                                strict_log):
    host, port, sid = _online_with_a_held_plus(emulator, open_modem, profile)
    kw = {"drop": {"socket": sid, "how": "rst"}, "pdp_deact": {"cid": 1}, "register": {"stat": 0}}[fault]
    assert emulator.control(fault, **kw) == {"ok": True}
    emulator.advance(port, 3)
    got = host.quiet_for(0.5)
    pdp_urc = b'\r\n+QIURC: "pdpdeact",1\r\n' if profile == "ec2x" and fault != "drop" else b""
    assert got == b"\r\nNO CARRIER\r\n" + pdp_urc, got
    conn = echo.wait_done(0, timeout=10)
    assert bytes(conn.received) == b"hi"                             # the "+" had nowhere to go
    assert host.at("ATO") == b"\r\nNO CARRIER\r\n"


@pytest.mark.parametrize("profile", ["ec2x", "ml302"])
def test_a_held_plus_goes_into_the_connection_before_a_dtr_hang_up(emulator, open_modem, echo, profile,
                                                                  strict_log):
    host, port, sid = _online_with_a_held_plus(emulator, open_modem, profile)
    assert emulator.control("dtr", level=0) == {"ok": True}          # AT&D2 (the default): hang up
    assert host.read_until(b"NO CARRIER\r\n", timeout=5) == b"\r\nNO CARRIER\r\n"
    conn = echo.wait_done(0, timeout=10)
    assert bytes(conn.received) == b"hi+"                            # never lost: data first, then the close
    assert emulator.control("dtr", level=1) == {"ok": True}
    assert host.at("AT").endswith(b"OK\r\n")


# Was a bug, fixed: a control reboot while the escape detector holds a '+' sends that '+' to the
# server after the power went (interpreter._hangup releases it before power_lost); a module
# without power sends nothing
@pytest.mark.parametrize("profile", ["ec2x", "ml302"])
def test_a_held_plus_is_not_sent_to_the_server_after_a_reboot(emulator, open_modem, echo, profile, strict_log):
    host, port, sid = _online_with_a_held_plus(emulator, open_modem, profile)
    assert emulator.control("reboot", ms=0) == {"ok": True}
    emulator.advance(port, 5)
    boot = host.quiet_for(0.5)
    assert b"NO CARRIER" not in boot and (profile != "ec2x" or boot == EC2X_BOOT), boot   # start-up URCs only
    conn = echo.wait_done(0, timeout=10)                             # the server sees the end
    assert bytes(conn.received) == b"hi"                             # nothing after the power went


def test_scenario_triggers_see_an_edited_line_a_repeat_and_any_case(emulator, ec2x_timed, strict_log):
    host, advance, port = ec2x_timed
    assert host.at("ATE1").endswith(b"OK\r\n")
    run = emulator.run_scenario({"step": [
        {"when": {"command": "+CSQ", "count": 1}, "op": "urc", "text": "+QIND: W1"},
        {"after": {"command": "+CSQ", "count": 2}, "op": "urc", "text": "+QIND: A2"},
        {"after": {"command": "AT+csq", "count": 3}, "op": "urc", "text": "+QIND: A3"},
        {"after": {"command": "+CGMR", "count": 1}, "op": "urc", "text": "+QIND: G1"},
    ]})
    csq = rb"\r\n\+CSQ: \d+,\d+\r\n\r\nOK\r\n"
    _bytewise(host, b"AT+CSX\x08Q\r")                                  # a typo, backspace, fixed
    got = host.read_until(b"OK\r\n", timeout=5)
    assert re.fullmatch(rb"AT\+CSX\x08Q\r\r\n\+QIND: W1\r\n" + csq, got), got
    _bytewise(host, b"A/")                                            # repeat the last line
    got = host.read_until(b"+QIND: A2\r\n", timeout=5)
    assert re.fullmatch(rb"A/" + csq + rb"\r\n\+QIND: A2\r\n", got), got
    _bytewise(host, b"at+csq\r")
    got = host.read_until(b"+QIND: A3\r\n", timeout=5)
    assert re.fullmatch(rb"at\+csq\r" + csq + rb"\r\n\+QIND: A3\r\n", got), got
    _bytewise(host, b"AT+CGMR;+CGMR\r")                               # after: the end of the whole line
    got = host.read_until(b"+QIND: G1\r\n", timeout=5)
    assert re.fullmatch(rb"AT\+CGMR;\+CGMR\r(\r\n[^\r\n]+\r\n){2}\r\nOK\r\n\r\n\+QIND: G1\r\n", got), got
    assert b"QIND" not in host.at("AT+CSQ") + host.at("AT+CGMR") + host.quiet_for(0.2)   # each fired once
    assert emulator.run(lambda: [f["step"] for f in run.fired]) == [1, 2, 3, 4]


@pytest.mark.parametrize("profile", ["ec2x", "ml302"])
def test_a_command_typed_ahead_during_a_stalled_transparent_open_runs_after_its_error(emulator, open_modem, echo,
                                                                                    profile, strict_log):
    host, port = open_modem(profile, manual_time=True)
    if profile == "ec2x":
        assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
        assert host.at('AT+QSSLCFG="negotiatetime",1,20') == b"\r\nOK\r\n"
        line, failed = b'AT+QSSLOPEN=1,1,1,"echo.example",443,2\r', b"\r\nERROR\r\n"
    else:
        _ml302_on(host)
        line, failed = b'AT+QSSLOPEN=0,0,"echo.example",443,1,20\r', b"\r\n+QSSLOPEN: 0,-1\r\n\r\nERROR\r\n"
    assert emulator.control("handshake_stall", count=1) == {"ok": True}
    _bytewise(host, line)
    echo.wait_connections(1, timeout=5)
    _bytewise(host, b"AT+CSQ\r")                                      # typed ahead: waits for the open
    emulator.wait_received(port, host.written)
    assert host.quiet_for(0.3) == b""
    emulator.advance(port, 19)
    assert host.quiet_for(0.2) == b""
    emulator.advance(port, 2)
    got = host.read_until(b"OK\r\n", timeout=5)
    assert re.fullmatch(re.escape(failed) + rb"\r\n\+CSQ: \d+,\d+\r\n\r\nOK\r\n", got), got
    assert host.quiet_for(0.2) == b""
    if profile == "ec2x":
        assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 569,operation timeout\r\n\r\nOK\r\n"
    assert emulator.control("state")["sockets"] == [] or profile == "ml302"


@pytest.mark.modem_uart
@pytest.mark.modem_manual_time
def test_plugin_uart_modem_rebooted_while_no_host_holds_the_port(modem):
    host = Host(modem.path)
    try:
        assert host.at("ATE0").endswith(b"OK\r\n")
        host.write("AT+QSSLSEND=1,5\r")                               # (no socket: ERROR, then closed)
        host.read_until(b"ERROR\r\n", timeout=5)
    finally:
        host.close()
    assert modem.control("reboot", ms=0) == {"ok": True}
    modem.advance(2)                                                 # the start-up URCs, to nobody
    host = Host(modem.path)
    try:
        assert host.quiet_for(0.3) == b""                            # lost: a UART with no listener
        _bytewise(host, b"AT\r")
        assert host.read_until(b"OK\r\n", timeout=5) == b"AT\r\r\nOK\r\n"   # echo back on after the restart
        assert modem.control("state")["cfun"] == 1
    finally:
        host.close()
    assert any("RDY" in line for line in modem.trace_tail(200))


@pytest.mark.parametrize("profile", ["ec2x", "ml302"])
@pytest.mark.parametrize("fault", ["drop", "pdp_deact", "register", "dtr"])
def test_a_fault_inside_a_send_prompt_then_the_rest_of_the_data(emulator, open_modem, echo, profile, fault,
                                                               strict_log):
    """The connection ends (or DTR drops: AT&D2 ends only online mode, never a prompt) while the
    host is half way through its data: nothing is written inside the prompt; the send's one
    result (the connection gone: ERROR, as the notes say of an abnormally closed one), then the
    URCs in the order their events came."""
    host, port = open_modem(profile, manual_time=True)
    if profile == "ec2x":
        assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
        _open(host, 1)
        sid, closed = 1, b'\r\n+QSSLURC: "closed",1\r\n'
        pdp = b'\r\n+QIURC: "pdpdeact",1\r\n'
        _bytewise(host, b"AT+QSSLSEND=1,5\r")
        rest = b"45"
    else:
        _ml302_on(host)
        _ml302_open(host, 0)
        sid, closed, pdp = 0, b'\r\n+QSSLURC: "close",0\r\n', b""
        _bytewise(host, b"AT+QSSLSEND=0\r")
        rest = b"45\x1a"
    host.read_until(b"> ", timeout=5)
    _bytewise(host, b"123")
    emulator.wait_received(port, host.written)
    kw = {"drop": {"socket": sid, "how": "rst"}, "pdp_deact": {"cid": 1}, "register": {"stat": 0},
          "dtr": {"level": 0}}[fault]
    assert emulator.control(fault, **kw) == {"ok": True}
    assert host.quiet_for(0.3) == b""
    _bytewise(host, rest)
    emulator.wait_received(port, host.written)
    emulator.advance(port, 1)
    got = host.quiet_for(0.5)
    if fault == "dtr":
        assert got.startswith(b"\r\nSEND OK\r\n"), got
        assert echo.wait_received(5, timeout=5) == b"12345"
        assert emulator.control("dtr", level=1) == {"ok": True}
    else:
        assert got == b"\r\nERROR\r\n" + (pdp if fault != "drop" else b"") + closed, got
        assert bytes(echo.wait_done(0, timeout=10).received) == b""     # none of it left
    assert host.at("AT").endswith(b"OK\r\n")


def test_a_tcp_transparent_stream_over_latency_and_loss_escapes_and_resumes(emulator, ec2x_on, tcp_echo,
                                                                          strict_log):
    from tests.e2e.socket_support import TCP_HOST, TCP_PORT
    host, port = ec2x_on
    assert emulator.control("net", latency_ms=120, loss=0.25, seed=5) == {"ok": True}
    _bytewise(host, f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,2\r'.encode())
    emulator.wait_received(port, host.written)
    assert _pump(emulator, port, host, 11) == b"\r\nCONNECT\r\n"
    blob = (bytes(range(256)) + b"+++\r\nAT+QICLOSE=0\r\n") * 10
    for k in range(0, len(blob), 333):
        host.write(blob[k:k + 333])
    emulator.wait_received(port, host.written)
    assert _pump(emulator, port, host, len(blob)) == blob
    assert _escape(emulator, port, host) == b"\r\nOK\r\n"
    sockets = emulator.control("state")["sockets"]
    assert [(s["id"], s["service_type"], s["access_mode"]) for s in sockets] == [(0, "TCP", 2)], sockets
    assert host.at("ATO") == b"\r\nCONNECT\r\n"
    host.write(b"tail")
    emulator.wait_received(port, host.written)
    assert _pump(emulator, port, host, 4) == b"tail"
    assert _escape(emulator, port, host) == b"\r\nOK\r\n"
    host.write("AT+QICLOSE=0\r")
    emulator.wait_received(port, host.written)
    assert _pump(emulator, port, host, 6) == b"\r\nOK\r\n"
    assert tcp_echo.wait_connection(0).wait_received(len(blob) + 4) == blob + b"tail"


@pytest.mark.parametrize("escaped", [False, True], ids=["online", "after-escape"])
@pytest.mark.parametrize("kind", ["ec2x-ssl", "ec2x-tcp", "ml302-ssl"])
def test_after_a_reboot_ato_has_no_connection_to_return_to(emulator, open_modem, echo, tcp_echo, kind, escaped,
                                                          strict_log):
    from tests.e2e.socket_support import TCP_HOST, TCP_PORT
    profile = kind.split("-")[0]
    host, port = open_modem(profile, manual_time=True)
    if profile == "ml302":
        _ml302_on(host)
        host.write(f'AT+QSSLOPEN=0,0,"{HOST}",443,1\r')
    else:
        assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
        host.write(f'AT+QSSLOPEN=1,1,1,"{HOST}",443,2\r' if kind == "ec2x-ssl"
                   else f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,2\r')
    assert host.read_until(b"CONNECT\r\n", timeout=5) == b"\r\nCONNECT\r\n"
    if escaped:
        assert _escape(emulator, port, host) == b"\r\nOK\r\n"
    assert emulator.control("reboot", ms=0) == {"ok": True}
    emulator.advance(port, 2)
    boot = host.quiet_for(0.5)
    assert b"NO CARRIER" not in boot and b"OK" not in boot, boot
    assert host.at("ATO") == b"ATO\r\r\nNO CARRIER\r\n"                 # echo back on; nothing to return to
    assert host.quiet_for(0.2) == b""
    assert emulator.control("state")["sockets"] == []


def test_cli_scenario_aimed_at_modem_2_of_3_fires_on_its_host_only(tmp_path):
    scenario = tmp_path / "s.toml"
    scenario.write_text(
        '[[step]]\nwhen = { command = "+CGMR", count = 2 }\nmodem = 2\nop = "urc"\ntext = "+QIND: M2"\n\n'
        '[[step]]\nafter = { command = "+CGMR" }\nmodem = 1\nop = "urc"\ntext = "+QIND: M1"\n')
    proc = start("--offline", "--count", "3", "--link", str(tmp_path / "m-{n}"), "--state-dir", str(tmp_path / "st"),
                 "--scenario", str(scenario))
    hosts: list[Host] = []
    try:
        devs = [proc.stdout.readline().strip() for _ in range(3)]
        assert all(devs), devs
        hosts = [Host(d) for d in devs]
        for h in hosts:
            _bytewise(h, b"ATE0\r")
            assert h.read_until(b"OK\r\n", timeout=10).endswith(b"OK\r\n")
        version = rb"\r\n[^\r\n]+\r\n\r\nOK\r\n"
        for _ in range(3):                                           # modems 0 and 1 ask first, twice
            for h in hosts[:2]:
                _bytewise(h, b"AT+CGMR\r")                         # (modem 1's URC may lead the next read)
                assert re.fullmatch(rb"(\r\n\+QIND: M1\r\n)?" + version, h.read_until(b"OK\r\n", timeout=10))
        _bytewise(hosts[2], b"AT+CGMR\r")
        assert re.fullmatch(version, hosts[2].read_until(b"OK\r\n", timeout=10))
        _bytewise(hosts[2], b"AT+CGMR\r")                           # its 2nd: the URC, then the answer
        got = hosts[2].read_until(b"OK\r\n", timeout=10)
        assert got.startswith(b"\r\n+QIND: M2\r\n") and re.fullmatch(version, got[len(b"\r\n+QIND: M2\r\n"):]), got
        hosts[1].seen(b"\r\n+QIND: M1\r\n", timeout=10)              # after modem 1's 1st answer
        for h in hosts:
            h.quiet_for(0.3)
        assert b"QIND" not in hosts[0].transcript
        assert hosts[1].transcript.count(b"QIND") == 1 and hosts[2].transcript.count(b"QIND") == 1
        assert re.match(rb"ATE0\r\r\nOK\r\n" + version + rb"\r\n\+QIND: M1\r\n", bytes(hosts[1].transcript))
        assert proc.poll() is None
        assert stop(proc) == 0
    finally:
        for h in hosts:
            h.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


# == a "peer close" of a socket that has no peer connection ====================================
# Was a bug, fixed: control drop close/rst on a plain UDP AT+QIOPEN socket answers ok and the host
# sees +QIURC: "closed",0 and the socket dies; UDP has no connection a network could close (docs:
# ICMP errors are ignored, the socket stays open), so a module never reports that: refuse it as
# for a TCP LISTENER
@pytest.mark.parametrize("how", ["close", "rst"])
def test_drop_close_or_rst_of_a_udp_socket_is_refused(emulator, ec2x_on, udp_echo, how, strict_log):
    from tests.e2e.socket_support import UDP_HOST, UDP_PORT
    host, port = ec2x_on
    assert host.at(f'AT+QIOPEN=1,0,"UDP","{UDP_HOST}",{UDP_PORT},0,0') == b"\r\nOK\r\n"
    host.seen(b"+QIOPEN: 0,0\r\n", timeout=5)
    answer = emulator.control("drop", socket=0, how=how)
    assert host.quiet_for(0.3) == b""                                # no "closed": nothing a module could see
    assert answer["ok"] is False and "UDP" in answer["error"], answer
    host.write("AT+QISEND=0,3\r")                                   # and the socket still works
    host.read_until(b"> ", timeout=5)
    host.write(b"abc")
    assert host.read_until(RESULT, timeout=5) == b"\r\nSEND OK\r\n"
    host.seen(b'+QIURC: "recv",0\r\n', timeout=5)


def test_ml302_faults_during_a_qsecwrite_upload_wait_for_its_result(emulator, open_modem, echo, strict_log):
    """The ML302's upload (AT+QSECWRITE's `> ` prompt, ended by Ctrl+Z): a socket dropped, the PDP
    lost, a URC and a DTR pulse while the host types its certificate byte by byte; the slot gets
    every byte, the result comes first, then the URCs in the order their events came."""
    host, port = open_modem("ml302", manual_time=True)
    _ml302_on(host)
    _ml302_open(host, 0)
    data = b"-----BEGIN CERTIFICATE-----\n" + b"QUJD" * 40 + b"\n-----END CERTIFICATE-----\n"
    host.write("AT+QSECWRITE=2\r")
    assert host.read_until(b"> ", timeout=5) == b"\r\n> "
    _bytewise(host, data[:50])
    emulator.wait_received(port, host.written)
    for op, kw in (("drop", {"socket": 0, "how": "rst"}), ("urc", {"text": "+QIND: U"}), ("dtr", {"level": 0}),
                   ("dtr", {"level": 1}), ("pdp_deact", {"cid": 1})):
        assert emulator.control(op, **kw) == {"ok": True}, op
    assert host.quiet_for(0.3) == b""                               # nothing inside the upload
    _bytewise(host, data[50:80])
    host.write(data[80:] + b"\x1a")
    got = host.read_until(b"+QIND: U\r\n", timeout=5)
    assert got == (f"\r\n+QSECWRITE: {len(data)},{xor16(data):04x}\r\n\r\nOK\r\n".encode()
                   + b'\r\n+QSSLURC: "close",0\r\n\r\n+QIND: U\r\n'), got
    assert host.quiet_for(0.3) == b""                               # one "close"; no pdpdeact URC on the ML302
    assert host.at("AT+QSECREAD=2") == f"\r\n+QSECREAD: 1,{xor16(data):04x}\r\n\r\nOK\r\n".encode()
    assert b'"PDP DEACT"' in host.at("AT+QSSLSTATE")
