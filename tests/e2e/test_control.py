"""The control API (emulator/tools/control.py): each fault seen from a pyserial host
as a real module reports it, and the unix socket's JSON-lines protocol."""
from __future__ import annotations

import json
import re
import socket

import pytest

from emulator.io.app import BackgroundEmulator
from emulator.tools.control import ControlServer

HOST = "echo.example"           # routed to the `echo` fixture's server (tests/conftest.py)


def _open(host, client_id: int = 1, mode: int = 0) -> None:
    assert host.at(f'AT+QSSLOPEN=1,1,{client_id},"{HOST}",443,{mode}') == b"\r\nOK\r\n"
    host.seen(f"+QSSLOPEN: {client_id},0\r\n".encode(), timeout=3)


def _ml302_open(host, ssid: int = 0) -> None:
    assert host.at('AT+CGDCONT=1,"IP","CMNET"') == b"\r\nOK\r\n"
    assert host.at("AT+CGACT=1,1").endswith(b"OK\r\n")
    assert host.at(f'AT+QSSLOPEN={ssid},0,"{HOST}",443,0') == b"\r\nOK\r\n"
    host.seen(f"+QSSLOPEN: {ssid},0\r\n".encode(), timeout=3)


# -- the API itself -----------------------------------------------------------------
def test_bad_requests_answer_errors_and_never_raise(emulator, ec2x_on):
    for op, modem, kw in (("nope", 0, {}), ("state", 7, {}), ("state", "0", {}),
                          ("drop", 0, {"socket": 3, "how": "rst"}),
                          ("drop", 0, {"socket": 99, "how": "rst"}),
                          ("drop", 0, {"socket": 1}), ("dtr", 0, {"level": 2}),
                          ("dtr", 0, {"level": True}), ("state", 0, {"extra": 1}),
                          ("pdp_deact", 0, {"cid": 2}), ("slow", 0, {"command": "+NOPE", "ms": 5}),
                          ("urc", 0, {"text": "a\r\nb"}), ("urc", 0, {"text": ""}),
                          ("send_fail", 0, {"socket": 1})):
        answer = emulator.control(op, modem, **kw)
        assert answer["ok"] is False and answer["error"], (op, kw, answer)
    host, _ = ec2x_on
    assert host.quiet_for(0.1) == b""            # (an empty "urc" wrote a bare CR LF CR LF)


def test_state_lists_pdp_clock_and_sockets(emulator, ec2x_on, echo):
    host, _ = ec2x_on
    _open(host, 1)
    assert host.send_data(1, b"hello") == b"\r\nSEND OK\r\n"
    host.seen(b'+QSSLURC: "recv",1\r\n', timeout=3)
    state = emulator.control("state")
    assert state["ok"] and state["profile"] == "ec2x" and state["clock"]
    assert {"cid": 1, "active": True, "apn": "UNINET", "address": "10.7.157.1"} in state["pdp"]
    (sock,) = state["sockets"]
    assert sock["id"] == 1 and sock["state"] == "CONNECTED" and sock["access_mode"] == 0
    assert sock["address"] == f"{HOST}:443" and sock["bytes_sent"] == 5 and sock["bytes_received"] == 5
    assert sock["tls_version"] and sock["cipher"]


# -- drops --------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["close", "rst"])
def test_drop_reports_closed_then_close_answers(emulator, ec2x_on, echo, how):
    host, _ = ec2x_on
    _open(host, 2)
    assert emulator.control("drop", socket=2, how=how) == {"ok": True}
    host.seen(b'+QSSLURC: "closed",2\r\n', timeout=3)
    assert re.search(rb'\+QSSLSTATE: 2,"SSLClient","echo.example",443,\d+,4,', host.at("AT+QSSLSTATE=2"))
    assert host.at("AT+QSSLSEND=2,1") == b"\r\nERROR\r\n"
    assert host.at("AT+QSSLCLOSE=2") == b"\r\nOK\r\n"
    assert emulator.control("state")["sockets"] == []


def test_drop_while_online_is_no_carrier(emulator, ec2x_on, echo):
    host, _ = ec2x_on
    host.write(f'AT+QSSLOPEN=1,1,3,"{HOST}",443,2\r')
    host.read_until(b"\r\nCONNECT\r\n", timeout=3)
    assert emulator.control("drop", socket=3, how="rst")["ok"]
    host.read_until(b"\r\nNO CARRIER\r\n", timeout=3)
    assert host.at("AT+QSSLCLOSE=3") == b"\r\nOK\r\n"


def test_blackhole_swallows_sends_until_the_buffer_is_full(emulator, ec2x_on, echo):
    host, port = ec2x_on
    _open(host, 1)
    assert emulator.control("drop", socket=1, how="blackhole")["ok"]
    results = [host.send_data(1, b"x" * 1460) for _ in range(12)]    # ssl.send_buffer 16384
    assert results == [b"\r\nSEND OK\r\n"] * 11 + [b"\r\nSEND FAIL\r\n"]
    assert b"QSSLURC" not in host.quiet_for(0.2)          # the echo never comes back
    assert echo.conn.received == b""                        # nothing reached the server
    state = emulator.control("state")["sockets"][0]
    assert state["blackholed"] and state["bytes_received"] == 0 and state["state"] == "CONNECTED"
    echo.conn.close(reset=True)                                     # unseen behind the blackhole
    assert host.quiet_for(0.2) == b""
    host.write("AT+QSSLCLOSE=1\r")                                 # lingers its 10 s: no FIN comes back
    emulator.wait_received(port, host.written)
    emulator.advance(port, 9.5)
    assert host.quiet_for(0.2) == b""
    emulator.advance(port, 0.5)
    assert host.read_until(b"\r\nOK\r\n", timeout=3) == b"\r\nOK\r\n"


# -- PDP ----------------------------------------------------------------------------
def test_pdp_deact_ec2x_urc_then_sockets_closed(emulator, ec2x_on, echo):
    host, _ = ec2x_on
    _open(host, 1)
    assert emulator.control("pdp_deact", cid=1)["ok"]
    got = host.read_until(b'+QSSLURC: "closed",1\r\n', timeout=3)
    assert got.endswith(b'\r\n+QIURC: "pdpdeact",1\r\n\r\n+QSSLURC: "closed",1\r\n'), got
    assert host.at("AT+QIACT?") == b"\r\nOK\r\n"
    assert host.at("AT+QSSLCLOSE=1") == b"\r\nOK\r\n"
    assert not emulator.control("pdp_deact", cid=1)["ok"]     # not active any more


def test_pdp_deact_ml302_closes_sockets_and_state_says_pdp_deact(emulator, open_modem, echo):
    host, _ = open_modem("ml302", manual_time=True)
    _ml302_open(host, 0)
    assert emulator.control("pdp_deact", cid=1)["ok"]
    got = host.read_until(b'+QSSLURC: "close",0\r\n', timeout=3)
    assert got == b'\r\n+QSSLURC: "close",0\r\n', got
    assert b'+QSSLSTATE: "PDP DEACT"' in host.at("AT+QSSLSTATE")


# -- open faults ----------------------------------------------------------------------
@pytest.mark.parametrize("op, code", [("dns_fail", 565), ("connect_refuse", 566)])
def test_open_faults_ec2x(emulator, ec2x_on, echo, op, code):
    host, _ = ec2x_on
    assert emulator.control(op, count=1)["ok"]
    assert host.at(f'AT+QSSLOPEN=1,1,1,"{HOST}",443,0') == b"\r\nOK\r\n"
    host.seen(f"+QSSLOPEN: 1,{code}\r\n".encode(), timeout=3)
    assert host.at("AT+QIGETERROR").startswith(f"\r\n+QIGETERROR: {code},".encode())
    _open(host, 1)                                          # only the next one failed


def test_handshake_stall_ec2x_is_569_after_negotiatetime(emulator, ec2x_on, echo):
    host, port = ec2x_on
    assert host.at('AT+QSSLCFG="negotiatetime",1,20') == b"\r\nOK\r\n"
    assert emulator.control("handshake_stall")["ok"]
    assert host.at(f'AT+QSSLOPEN=1,1,1,"{HOST}",443,0') == b"\r\nOK\r\n"
    echo.wait_connections(1, timeout=3)
    assert b"+QSSLOPEN" not in host.quiet_for(0.2)
    emulator.advance(port, 19)
    assert b"+QSSLOPEN" not in host.quiet_for(0.1)
    emulator.advance(port, 1.5)
    host.seen(b"+QSSLOPEN: 1,569", timeout=3)


@pytest.mark.parametrize("op", ["dns_fail", "connect_refuse"])
def test_open_faults_ml302_are_minus_1(emulator, open_modem, echo, op):
    host, _ = open_modem("ml302", manual_time=True)
    assert emulator.control(op, count=2)["ok"]
    assert host.at('AT+CGDCONT=1,"IP","CMNET"') == b"\r\nOK\r\n"
    assert host.at("AT+CGACT=1,1").endswith(b"OK\r\n")
    for _ in range(2):
        assert host.at(f'AT+QSSLOPEN=0,0,"{HOST}",443,0') == b"\r\nOK\r\n"
        host.seen(b"+QSSLOPEN: 0,-1\r\n", timeout=3)
    assert host.at(f'AT+QSSLOPEN=0,0,"{HOST}",443,0') == b"\r\nOK\r\n"
    host.seen(b"+QSSLOPEN: 0,0\r\n", timeout=3)


def test_handshake_stall_ml302_is_minus_1_after_its_timeout(emulator, open_modem, echo):
    host, port = open_modem("ml302", manual_time=True)
    assert emulator.control("handshake_stall", count=1)["ok"]
    assert host.at('AT+CGDCONT=1,"IP","CMNET"') == b"\r\nOK\r\n"
    assert host.at("AT+CGACT=1,1").endswith(b"OK\r\n")
    assert host.at(f'AT+QSSLOPEN=0,0,"{HOST}",443,0,30') == b"\r\nOK\r\n"
    echo.wait_connections(1, timeout=3)
    emulator.advance(port, 29)
    assert b"+QSSLOPEN" not in host.quiet_for(0.1)
    emulator.advance(port, 1.5)
    host.seen(b"+QSSLOPEN: 0,-1\r\n", timeout=3)


# -- sends, lines, port ------------------------------------------------------------------
def test_send_fail_for_the_next_k_sends(emulator, open_modem, echo):
    host, _ = open_modem("ml302", manual_time=True)
    _ml302_open(host, 0)
    assert emulator.control("send_fail", socket=0, count=2)["ok"]
    for expected in (b"SEND FAIL", b"SEND FAIL", b"SEND OK"):      # ML302: Ctrl+Z ends the data
        assert host.send_data(0, b"abc", fixed=False) == b"\r\n" + expected + b"\r\n"
    echo.wait_received(3, timeout=3)


def test_dtr_drop_leaves_online_mode(emulator, ec2x_on, echo):
    host, _ = ec2x_on
    assert host.at("AT&D1") == b"\r\nOK\r\n"
    host.write(f'AT+QSSLOPEN=1,1,3,"{HOST}",443,2\r')
    host.read_until(b"\r\nCONNECT\r\n", timeout=3)
    assert emulator.control("dtr", level=0)["ok"]            # AT&D1: like +++
    host.read_until(b"\r\nOK\r\n", timeout=3)
    assert emulator.control("dtr", level=1)["ok"]
    assert emulator.control("state")["dtr"] == 1
    assert host.at("ATO") == b"\r\nCONNECT\r\n"


def test_urc_injects_a_line(emulator, ec2x_on):
    host, _ = ec2x_on
    assert emulator.control("urc", text='+QIURC: "dnsgip",0,1,600')["ok"]
    assert host.read_until(b"600\r\n", timeout=3) == b'\r\n+QIURC: "dnsgip",0,1,600\r\n'


def test_reboot_goes_quiet_then_start_up_urcs(emulator, ec2x_on, echo):
    host, port = ec2x_on
    _open(host, 1)
    assert emulator.control("reboot", ms=3000)["ok"]
    assert host.quiet_for(0.2) == b""
    emulator.advance(port, 3.6)                # RDY at 3 s, the last URC 600 ms after it
    got = host.read_until(b"+QIND: SMS DONE\r\n", timeout=3)
    assert got.startswith(b"\r\nRDY\r\n") and b"QSSLURC" not in got
    assert host.at("AT+QIACT?") == b"AT+QIACT?\r\r\nOK\r\n"     # echo back on, PDP gone
    assert emulator.control("state")["sockets"] == []


def test_slow_answer_waits_on_the_modem_clock(emulator, ec2x_on, echo):
    host, port = ec2x_on
    assert emulator.control("slow", command="+QSSLOPEN", ms=5000)["ok"]
    host.write(f'AT+QSSLOPEN=1,1,1,"{HOST}",443,0\r')
    emulator.wait_received(port, host.written)
    assert host.quiet_for(0.3) == b""                       # the OK waits (the URC behind it)
    emulator.advance(port, 5)
    host.read_until(b"\r\nOK\r\n", timeout=3)
    host.seen(b"+QSSLOPEN: 1,0\r\n", timeout=3)
    assert emulator.control("slow", command="AT+QSSLOPEN", ms=0)["ok"]
    assert host.at("AT+QSSLCLOSE=1") == b"\r\nOK\r\n"


def test_slow_send_delays_the_answer_after_the_data(emulator, ec2x_on, echo):
    host, port = ec2x_on
    _open(host, 1)
    assert emulator.control("slow", command="+QSSLSEND", ms=1000)["ok"]
    host.write("AT+QSSLSEND=1,3\r")
    host.read_until(b"> ", timeout=3)
    host.write(b"abc")
    emulator.wait_received(port, host.written)
    assert b"SEND OK" not in host.quiet_for(0.2)
    emulator.advance(port, 1)
    host.read_until(b"\r\nSEND OK\r\n", timeout=3)


# -- network conditions --------------------------------------------------------------------
def test_net_latency_delays_both_ways_on_the_modem_clock(emulator, ec2x_on, echo):
    host, port = ec2x_on
    _open(host, 1)
    assert emulator.control("net", socket=1, latency_ms=300)["ok"]
    assert host.send_data(1, b"hello") == b"\r\nSEND OK\r\n"
    conn = echo.wait_handshake()
    assert host.quiet_for(0.2) == b"" and conn.received == b""     # still on its way
    emulator.advance(port, 0.3)
    echo.wait_received(5, timeout=3)                                # the echo is on its way back
    assert host.quiet_for(0.2) == b""
    emulator.advance(port, 0.3)
    host.seen(b'+QSSLURC: "recv",1\r\n', timeout=3)
    assert emulator.control("net", socket=1)["ok"]                  # all 0: conditions off
    assert host.at("AT+QSSLCLOSE=1,0") == b"\r\nOK\r\n"


def test_net_bandwidth_paces_what_the_server_gets(emulator, ec2x_on, echo):
    host, port = ec2x_on
    _open(host, 1)
    assert emulator.control("net", kbps=8)["ok"]                   # the whole modem: 1000 bytes/s
    assert host.send_data(1, b"x" * 1000) == b"\r\nSEND OK\r\n"   # + TLS record overhead
    conn = echo.wait_handshake()
    emulator.advance(port, 0.9)
    assert host.quiet_for(0.2) == b"" and conn.received == b""
    emulator.advance(port, 0.2)
    echo.wait_received(1000, timeout=3)
    assert emulator.control("net", latency_ms=0, kbps=0, loss=0)["ok"]
    assert emulator.control("net", loss=2)["ok"] is False


def test_net_loss_on_tcp_is_a_retransmission_delay(emulator, ec2x_on, echo):
    host, port = ec2x_on
    _open(host, 1)
    assert emulator.control("net", socket=1, loss=1.0, seed=7)["ok"]
    assert host.send_data(1, b"abc") == b"\r\nSEND OK\r\n"
    conn = echo.wait_handshake()
    assert host.quiet_for(0.2) == b"" and conn.received == b""
    emulator.advance(port, 0.2)
    echo.wait_received(3, timeout=3)                                # late, never lost


def test_uart_noise_fragments_answers_but_keeps_every_byte(emulator, ec2x_on):
    host, _ = ec2x_on
    clean = host.at("AT+QSSLCFG=?")
    assert len(clean) > 100
    assert emulator.control("uart_noise", on=True, seed=3)["ok"]
    host.write("AT+QSSLCFG=?\r")
    reads, got = 0, b""
    while not got.endswith(b"\r\nOK\r\n"):
        chunk = host.ser.read(max(1, host.ser.in_waiting))
        if chunk:
            reads += 1
            got += chunk
    assert got == clean and reads > 1
    assert emulator.control("uart_noise", on=False)["ok"]
    assert host.at("AT+QSSLCFG=?") == clean
    assert emulator.control("uart_noise", on="yes")["ok"] is False


# -- the unix socket --------------------------------------------------------------------
def test_control_socket_protocol(tmp_path):
    path = tmp_path / "ctl.sock"
    with BackgroundEmulator(offline=True) as emu:
        emu.add_modem("ec2x", state_dir=tmp_path / "state", manual_time=True)
        server = ControlServer(emu.emulator, path)
        emu.call(server.start())
        try:
            assert path.is_socket() and (path.stat().st_mode & 0o777) == 0o600
            with socket.socket(socket.AF_UNIX) as client:
                client.settimeout(3)
                client.connect(str(path))
                reader = client.makefile("rb")

                def ask(line: bytes) -> dict:
                    client.sendall(line + b"\n")
                    return json.loads(reader.readline())

                state = ask(b'{"op": "state", "modem": 0}')
                assert state["ok"] is True and state["profile"] == "ec2x" and state["sockets"] == []
                unknown = ask(b'{"op": "fly"}')
                assert unknown["ok"] is False and "unknown op" in unknown["error"]
                bad = ask(b'{"op": "state",')
                assert bad["ok"] is False and "malformed JSON" in bad["error"]
                assert ask(b"[1, 2]")["ok"] is False
                assert ask(b'{"op": "state", "modem": 1}')["ok"] is False
                assert ask(b'{"op": "dtr", "level": 0}') == {"ok": True}
            with pytest.raises(OSError):                         # a second server: in use
                emu.call(ControlServer(emu.emulator, path).start())
        finally:
            emu.call(server.close())
        assert not path.exists()
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(str(path))                                    # left by a killed run
        stale.close()
        emu2 = BackgroundEmulator(offline=True)
        with emu2:
            emu2.add_modem("ml302", state_dir=tmp_path / "state2")
            server = ControlServer(emu2.emulator, path)
            emu2.call(server.start())
            assert emu2.control("state")["profile"] == "ml302"
            emu2.call(server.close())


def test_stopping_a_background_emulator_ends_what_its_modems_still_run(tmp_path):
    """A command whose answer is still due (control 'slow') when the emulator stops: its task
    is cancelled and run to its end, as asyncio.run() would, not left pending on a closed
    loop for the garbage collector (a "coroutine ... was never awaited" warning)."""
    import asyncio

    emu = BackgroundEmulator()
    emu.start()
    port = emu.add_modem("ec2x", state_dir=tmp_path)
    assert emu.control("slow", command="+CSQ", ms=60000)["ok"]
    emu.run(port.modem.feed, b"AT+CSQ\r")
    assert [t for t in emu.run(asyncio.all_tasks) if not t.done()]     # its answer waits
    emu.stop()
    assert not [t for t in asyncio.all_tasks(emu.loop) if not t.done()]


def test_qpowd_powers_down_until_a_control_reboot(emulator, ec2x_on, echo):
    """AT+QPOWD (EC25 AT manual): OK, "POWERED DOWN", then the module is off: nothing it is
    sent is answered or remembered, no socket survives.  With defaults.qpowd_power_on_ms 0 it
    stays off until the control API's reboot (its PWRKEY): the start-up URCs, then a module
    that answers again."""
    host, port = ec2x_on
    modem = port.modem
    emulator.run(lambda: modem.profile._found.__setitem__("defaults.qpowd_power_on_ms", 0))
    assert host.at("AT+QPOWD=?") == b"\r\n+QPOWD: (0,1)\r\n\r\nOK\r\n"
    for bad in ("AT+QPOWD=2", "AT+QPOWD=1,1", 'AT+QPOWD="1"', "AT+QPOWD?", "AT+QPOWD=", "AT+QPOWD=-1"):
        assert host.at(bad) == b"\r\nERROR\r\n", bad
    _open(host, 1)
    host.write("AT+QPOWD=1;+CSQ\r")                   # the rest of the line is not run
    assert host.read_until(b"POWERED DOWN\r\n") == b"\r\nOK\r\n\r\nPOWERED DOWN\r\n"
    host.write("AT\rAT+CSQ\rAT+QSSLSEND=1,3\rabc")
    emulator.wait_received(port, host.written)
    emulator.advance(port, 60)
    assert host.quiet_for(0.3) == b""
    assert emulator.control("urc", text="+TEST")["ok"]          # nothing comes out of it either
    assert host.quiet_for(0.2) == b""
    assert emulator.control("state")["sockets"] == []
    assert emulator.control("reboot", ms=100)["ok"]
    emulator.advance(port, 0.8)
    got = host.read_until(b"+QIND: SMS DONE\r\n", timeout=3)
    assert got.startswith(b"\r\nRDY\r\n"), got
    assert host.at("AT").endswith(b"\r\nOK\r\n")              # (echo back on after a start)


def test_qpowd_on_a_board_with_pwrkey_held_low_starts_again_by_itself(emulator, ec2x_on):
    """The EC2x profile's defaults.qpowd_power_on_ms (1000): off for a second, then the
    start-up URCs -- ThaiEasyElec's shield driver resets with AT+QPOWD=0 and waits for RDY."""
    host, port = ec2x_on
    host.write("AT+QPOWD=0\r")
    assert host.read_until(b"POWERED DOWN\r\n") == b"\r\nOK\r\n\r\nPOWERED DOWN\r\n"
    emulator.advance(port, 0.9)
    host.write("AT\r")
    emulator.wait_received(port, host.written)
    assert host.quiet_for(0.3) == b""                          # still off: the AT is lost
    emulator.advance(port, 0.2)                                # powered on: RDY
    emulator.advance(port, 0.7)
    got = host.read_until(b"+QIND: SMS DONE\r\n", timeout=3)
    assert got == (b"\r\nRDY\r\n\r\n+CFUN: 1\r\n\r\n+CPIN: READY\r\n\r\n+QUSIM: 1\r\n"
                   b"\r\n+QIND: SMS DONE\r\n"), got
    assert host.at("AT").endswith(b"\r\nOK\r\n")


def test_qpowd_exec_form_and_atv0(emulator, ec2x_on):
    host, port = ec2x_on
    host.write("ATV0\r")
    assert host.read_until(b"0\r") == b"0\r"
    host.write("AT+QPOWD\r")
    assert host.read_until(b"POWERED DOWN\r\n") == b"0\rPOWERED DOWN\r\n"
    host.write("AT\r")
    emulator.wait_received(port, host.written)
    assert host.quiet_for(0.3) == b""
