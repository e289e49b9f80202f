"""Review of c6a5d21..1d6d0e3 (2026-12-07, h_rev2): the boot gap (c6a5d21: the port reads
nothing from a restart until RDY), the DTLS certificate sniffer taking only what Mbed TLS
takes (980e54b), AT+QFLST="<name>" of a missing file (c53d7d0), transparent data arriving in
the loop turn the host closes the port (58c551f) and the late LF's part in the +++ guard
time (1d6d0e3) -- through the pty, against OpenSSL / plain peers on 127.0.0.1.

Found two bugs, fixed since: the DTLS sniffer refused record version fe fe, which Mbed TLS
reads as DTLS 1.0 (a forged Certificate replaying that record's number failed a trusted
server); and replaying a host's AT log across AT+CFUN=1,1 wrote its next line into the boot
gap when the log showed no start-up URC (the replay now waits for RDY and does not compare
start-up URCs the log lacks)."""
from __future__ import annotations

import io
import re
import threading
import time
from contextlib import redirect_stderr, redirect_stdout

import pytest

from emulator.testing.host import Host
from emulator.testing.peers import OpenSslServer, TcpServer, UdpMiddlebox
from emulator.testing.peers.dtls_wire import CT_HANDSHAKE, fragment, records
from tests.e2e.socket_support import TCP_HOST, TCP_PORT, escape, wait_for
from tests.e2e.ssl_options_support import HOST, PORT, cfg, trust

OK = b"\r\nOK\r\n"
RDY = b"\r\nRDY\r\n"


# == (1) c6a5d21: nothing is read from a restart until RDY ==========================================
def test_host_polling_at_through_a_control_reboot_gets_nothing_until_rdy_then_ok(emulator, ec2x_strict):
    """A driver's alive loop: "AT" every 50 ms (modem time) from the reboot on.  Before RDY
    nothing (no echo, no OK, no ERROR); the first poll after RDY gets the echo (AT&W's set) and
    OK, exactly once."""
    host, advance, _ = ec2x_strict
    assert emulator.control("reboot", ms=400) == {"ok": True}
    for _ in range(7):                                # 0 .. 350 ms: the UART is not up
        host.write(b"AT\r\n")
        advance(0.05)
        assert host.quiet_for(0.05) == b""
    advance(0.05)                                     # 400 ms: RDY
    assert host.read_until(RDY) == RDY
    host.write(b"AT\r\n")
    assert host.read_until(OK) == b"AT\r" + OK
    assert host.quiet_for(0.2) == b""



def test_real_time_alive_loop_through_a_reboot_sees_rdy_first(emulator, open_modem, strict_log):
    """Real time: a driver writes "AT\\r\\n" every 5 ms from before a control reboot (RDY 300 ms
    later) until after it: the first bytes the module says after the reboot are RDY -- no
    OK, ERROR or echo ahead of it -- and polls after RDY are answered OK."""
    host, port = open_modem("ec2x")
    assert emulator.control("reboot", ms=300) == {"ok": True}
    t0 = time.monotonic()
    out = bytearray()
    while time.monotonic() - t0 < 0.7:
        host.write(b"AT\r\n")
        time.sleep(0.005)
        out += host.quiet_for(0)
    out += host.quiet_for(0.3)
    assert out.startswith(RDY), bytes(out[:80])
    assert b"ERROR" not in out and out.count(OK) >= 10, bytes(out[:300])

def test_line_started_before_rdy_and_ended_after_is_not_a_command(emulator, ec2x_strict):
    """"AT+CGM" written in the gap, "R\\r\\n" after RDY: the module saw only "R<CR><LF>" --
    no answer (not even ERROR: the line does not start with AT); echo of what it read."""
    host, advance, _ = ec2x_strict
    assert emulator.control("reboot", ms=200) == {"ok": True}
    host.write(b"AT+CGM")
    advance(0.2)
    assert host.read_until(RDY) == RDY
    host.write(b"R\r\n")
    assert host.quiet_for(0.3) == b"R\r"
    assert host.at("AT") == b"AT\r" + OK


def test_cfun_reset_inside_a_multi_command_line_runs_nothing_after_it(ec2x_strict):
    """AT+CFUN=1,1;+CMEE=0 (ATE0 host, CMEE 1 saved by default): OK, then the module
    restarts; +CMEE=0 never ran, before or after RDY."""
    host, advance, _ = ec2x_strict
    host.write(b"AT+CFUN=1,1;+CMEE=0;+CSQ\r\n")
    assert host.read_until(OK) == OK
    assert host.quiet_for(0.2) == b""
    advance(0.05)
    assert host.read_until(RDY) == RDY
    assert host.quiet_for(0.2) == b""
    assert host.at("AT+CMEE?") == b"AT+CMEE?\r\r\n+CMEE: 1\r\n" + OK


@pytest.mark.parametrize("form, final", [("ATV0", b"0\r"), ("ATQ1", b"")], ids=["V0", "Q1"])
def test_cfun_reset_framed_as_asked_then_rdy_verbose(ec2x_strict, form, final):
    """ATV0 / ATQ1 (not saved): AT+CFUN=1,1's OK is framed with them ("0<CR>" / nothing),
    what is written in the gap is lost, RDY comes in the AT&W set's verbose form."""
    host, advance, _ = ec2x_strict
    host.write(f"{form}\r".encode())
    assert host.read_until(final) == final if final else host.quiet_for(0.2) == b""
    host.write(b"AT+CFUN=1,1\r")
    if final:
        assert host.read_until(final) == final
    assert host.quiet_for(0.2) == b""
    host.write(b"AT\r")
    advance(0.05)
    assert host.read_until(RDY) == RDY
    assert host.quiet_for(0.2) == b""
    assert host.at("AT") == b"AT\r" + OK


def test_control_reboot_with_a_data_prompt_open_loses_the_payload_written_in_the_gap(
        emulator, ec2x_strict, tcp_sink):
    """AT+QISEND=0,5 -> "> "; the module restarts (control API); the host's 5 bytes and a
    Ctrl-Z written in the gap are lost: nothing reaches the server, no SEND OK, no echo."""
    host, advance, _ = ec2x_strict
    assert host.at(f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,0') == OK
    assert host.read_until(b"+QIOPEN: 0,0\r\n") == b"\r\n+QIOPEN: 0,0\r\n"
    conn = tcp_sink.wait_connection(0)
    host.write(b"AT+QISEND=0,5\r")
    assert host.read_until(b"> ") == b"\r\n> "
    assert emulator.control("reboot", ms=300) == {"ok": True}
    host.write(b"hello")
    host.write(b"AT+QISEND=0,3\r")
    host.write(b"abc")
    advance(0.2)
    assert host.quiet_for(0.2) == b""
    advance(0.1)
    assert host.read_until(RDY) == RDY
    assert host.at("AT") == b"AT\r" + OK
    time.sleep(0.2)
    assert conn.received == b""
    assert host.at("AT+QISTATE?") == b"AT+QISTATE?\r" + OK


def test_control_reboot_in_transparent_mode_loses_gap_bytes_and_ato_finds_no_connection(
        emulator, ec2x_strict, tcp_sink):
    """Transparent TCP (access mode 2): the module restarts; the host, unaware, writes on
    ("data" and "+++"); nothing of it reaches the server; after RDY the port is in command
    mode and ATO answers NO CARRIER."""
    host, advance, _ = ec2x_strict
    assert host.at(f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,2') == b"\r\nCONNECT\r\n"
    conn = tcp_sink.wait_connection(0)
    host.write(b"before")
    advance(0.5)                                      # (transwaittm)
    wait_for(lambda: conn.received == b"before", 5, "before")
    assert emulator.control("reboot", ms=300) == {"ok": True}
    host.write(b"in the gap")
    advance(0.1)
    host.write(b"+++")
    advance(0.2)
    assert host.read_until(RDY) == RDY
    assert host.quiet_for(0.2) == b""
    assert host.at("AT") == b"AT\r" + OK
    assert host.at("ATO") == b"ATO\r\r\nNO CARRIER\r\n"
    assert conn.received == b"before"


def test_qpowd_power_on_reads_nothing_before_rdy(ec2x_strict):
    """AT+QPOWD: OK, POWERED DOWN; off for qpowd_power_on_ms (1 s), then the restart's RDY
    at once: what the host wrote while off is lost, the next line after RDY answered."""
    host, advance, _ = ec2x_strict
    host.write(b"AT+QPOWD\r\n")
    assert host.read_until(b"POWERED DOWN\r\n") == OK + b"\r\nPOWERED DOWN\r\n"
    host.write(b"AT+CMEE=0\r\n")
    advance(0.5)
    host.write(b"AT\r\n")
    assert host.quiet_for(0.2) == b""
    advance(0.5)
    assert host.read_until(RDY) == RDY
    assert host.at("AT+CMEE?") == b"AT+CMEE?\r\r\n+CMEE: 1\r\n" + OK


def test_restart_with_unread_socket_data_leaves_nothing_behind(emulator, ec2x_strict, tcp_echo):
    """A TCP socket in buffer mode with 5 unread bytes (its "recv" URC read): AT+CFUN=1,1;
    after RDY no URC of that socket, AT+QIRD=0 ERROR-free answers say nothing is open."""
    host, advance, _ = ec2x_strict
    assert host.at(f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,0') == OK
    assert host.read_until(b"+QIOPEN: 0,0\r\n") == b"\r\n+QIOPEN: 0,0\r\n"
    host.write(b"AT+QISEND=0,5\r")
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(b"hello")
    assert host.read_until(b"SEND OK\r\n") == b"\r\nSEND OK\r\n"
    assert host.read_until(b'+QIURC: "recv",0\r\n') == b'\r\n+QIURC: "recv",0\r\n'
    host.write(b"AT+CFUN=1,1\r\nAT+QIRD=0\r\n")
    assert host.read_until(OK) == OK
    advance(0.05)
    assert host.read_until(RDY) == RDY
    advance(0.7)
    got = host.quiet_for(0.3)
    assert b"QIURC" not in got and b"QIRD" not in got, got
    assert host.at("AT+QISTATE?") == b"AT+QISTATE?\r" + OK


def test_uart_port_loses_gap_bytes_too(emulator, open_modem, strict_log):
    """--uart (hangup_on_close=False): the same gap -- a poll written right after
    AT+CFUN=1,1's OK (real time: 50 ms to RDY) is not answered before RDY, and only the
    next poll after RDY is."""
    host, port = open_modem("ec2x", manual_time=True, hangup_on_close=False)
    advance = emulator.advancer(port, host)
    host.write(b"AT+CFUN=1,1\r")
    assert host.read_until(OK) == OK
    host.write(b"AT\r")
    assert host.quiet_for(0.2) == b""
    advance(0.05)
    assert host.read_until(RDY) == RDY
    assert host.quiet_for(0.2) == b""
    assert host.at("AT") == b"AT\r" + OK


def test_trace_recorded_across_a_restart_with_gap_bytes_replays(emulator, tmp_path, strict_log):
    """A trace of a host that writes AT+CMEE=0 in the restart's gap (lost: +CMEE: 1 after)
    replays with the same answers (exit 0)."""
    from emulator.tools.trace import replay_main
    path = tmp_path / "gap.trace"
    port = emulator.add_modem("ec2x", manual_time=True, trace=str(path), state_dir=tmp_path / "s")
    host = Host(port.path)
    try:
        emulator.run(port.port.look_for_host)
        advance = emulator.advancer(port, host)
        assert host.at("ATE0") == b"ATE0\r" + OK
        assert host.at("AT+CMEE=2") == OK
        host.write(b"AT+CFUN=1,1\r")
        assert host.read_until(OK) == OK
        host.write(b"AT+CMEE=0\r")
        advance(0.02)
        assert host.quiet_for(0.1) == b""
        advance(0.03)
        assert host.read_until(RDY) == RDY
        advance(0.7)
        host.quiet_for(0.2)
        assert host.at("AT+CMEE?") == b"AT+CMEE?\r\r\n+CMEE: 1\r\n" + OK
    finally:
        host.close()
    wait_for(lambda: not emulator.run(lambda: port.port.attached), 5, "hang-up")
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = replay_main([str(path)])
    assert rc == 0, out.getvalue()[-1500:] + err.getvalue()[-1500:]



def _replay_log(tmp_path, text: str) -> tuple[int, str]:
    from emulator.tools.trace import replay_main
    path = tmp_path / "host.log"
    path.write_text(text)
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = replay_main([str(path)])
    return rc, out.getvalue() + err.getvalue()


def test_at_log_replay_across_a_restart_whose_rdy_was_logged(tmp_path, strict_log):
    """A host's AT log (">> / <<"): AT+CFUN=1,1, OK, RDY, then AT: the replay waits for the
    logged RDY, so its next line is read (exit 0)."""
    rc, text = _replay_log(tmp_path, ">> ATE0\n<< OK\n>> AT+CFUN=1,1\n<< OK\n<< RDY\n>> AT\n<< OK\n"
                                     ">> AT+CMEE?\n<< +CMEE: 1\n<< OK\n")
    assert rc == 0, text


def test_at_log_replay_across_a_restart_without_logged_urcs(tmp_path, strict_log):
    """The same log from a driver that logged command answers only: the real module answered
    the AT (the host had waited for it); the replay must not report a difference."""
    rc, text = _replay_log(tmp_path, ">> ATE0\n<< OK\n>> AT+CFUN=1,1\n<< OK\n>> AT\n<< OK\n")
    assert rc == 0, text

# == (3) c53d7d0: AT+QFLST="<name>" of a missing file ===============================================
@pytest.mark.parametrize("cmee, answer", [(0, b"\r\nERROR\r\n"), (1, b"\r\n+CME ERROR: 417\r\n"),
                                          (2, b"\r\n+CME ERROR: fail to list the file\r\n")])
def test_qflst_of_a_missing_name_in_each_cmee_form(ec2x, cmee, answer):
    assert ec2x.at(f"AT+CMEE={cmee}") == OK
    assert ec2x.at('AT+QFLST="nosuch.pem"') == answer
    assert ec2x.at('AT+QFLST="RAM:nosuch.pem"') == answer
    assert ec2x.at('AT+QFLST="UFS:nosuch.pem"') == answer


def test_qflst_named_present_pattern_and_empty_drive(ec2x):
    """Present names list themselves (UFS bare, RAM: prefixed, UFS: accepted); a pattern
    matching nothing and the bare form on an empty drive are a bare OK; the 417 stops the
    rest of its line."""
    assert ec2x.at("AT+QFLST") == OK
    assert ec2x.at('AT+QFLST="*"') == OK
    assert ec2x.at('AT+QFLST="RAM:*"') == OK
    assert ec2x.at('AT+QFLST="a?.pem"') == OK
    assert ec2x.upload("ab.pem", b"12345").endswith(OK)
    assert ec2x.upload("RAM:r.bin", b"xyz").endswith(OK)
    assert ec2x.at('AT+QFLST="ab.pem"') == b'\r\n+QFLST: "ab.pem",5\r\n' + OK
    assert ec2x.at('AT+QFLST="UFS:ab.pem"') == b'\r\n+QFLST: "ab.pem",5\r\n' + OK
    assert ec2x.at('AT+QFLST="RAM:r.bin"') == b'\r\n+QFLST: "RAM:r.bin",3\r\n' + OK
    assert ec2x.at('AT+QFLST="a?.pem"') == b'\r\n+QFLST: "ab.pem",5\r\n' + OK
    assert ec2x.at('AT+QFLST="RAM:ab.pem"') == b"\r\n+CME ERROR: 417\r\n"
    assert ec2x.at('AT+QFLST="r.bin"') == b"\r\n+CME ERROR: 417\r\n"
    assert ec2x.at('AT+QFLST="zz.pem";+CMEE=0') == b"\r\n+CME ERROR: 417\r\n"
    assert ec2x.at("AT+CMEE?") == b"\r\n+CMEE: 1\r\n" + OK
    assert ec2x.at('AT+QFDEL="ab.pem"') == OK
    assert ec2x.at('AT+QFLST="ab.pem"') == b"\r\n+CME ERROR: 417\r\n"


def test_user_profile_without_boot_urcs_reads_again_after_the_restart_delay(emulator, tmp_path, strict_log):
    """A user profile (a copy of ec2x.toml) with no start-up URCs: AT+CFUN=1,1's gap ends
    after its 50 ms all the same -- nothing before, the poll after answered, the SIM ready."""
    from pathlib import Path

    src = (Path(__file__).resolve().parents[2] / "emulator" / "profiles" / "ec2x.toml").read_text()
    src = re.sub(r"(?m)^boot_urcs = .*$", "boot_urcs = []", src)
    src = re.sub(r"(?m)^boot_urc_ms = .*$", "boot_urc_ms = []", src)
    prof = tmp_path / "quiet.toml"
    prof.write_text(src)
    port = emulator.add_modem(str(prof), manual_time=True, state_dir=tmp_path / "s")
    host = Host(port.path)
    try:
        emulator.run(port.port.look_for_host)
        advance = emulator.advancer(port, host)
        assert host.at("ATE0") == b"ATE0\r" + OK
        host.write(b"AT+CFUN=1,1\r")
        assert host.read_until(OK) == OK
        host.write(b"AT\r")
        advance(0.02)
        assert host.quiet_for(0.2) == b""
        advance(0.05)
        assert host.quiet_for(0.2) == b""
        assert host.at("AT+CPIN?") == b"AT+CPIN?\r\r\n+CPIN: READY\r\n" + OK
    finally:
        host.close()


# == (5) 1d6d0e3: a late LF counts for the +++ guard time ==========================================
FINAL = re.compile(rb"\r\n(OK|ERROR|NO CARRIER|CONNECT)\r\n")


@pytest.fixture
def online(emulator, ec2x_strict):
    """(host, advance, server): an EC2x (manual time) online on SSL socket 4 (access mode 2)
    to a TLS sink; the host has been seen writing CR LF lines byte by byte."""
    from emulator.testing.peers import TlsServer
    host, advance, _ = ec2x_strict
    with TlsServer(mode="sink", legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        for b in f'AT+QSSLOPEN=1,1,4,"{HOST}",{PORT},2\r\n'.encode():
            host.write(bytes([b]))
            time.sleep(0.002)
        assert host.read_until(FINAL, 15) == b"\r\nCONNECT\r\n"
        server.wait_handshake()
        yield host, advance, server


def _ato_byte_by_byte(host, advance) -> None:
    assert escape(host, advance) == OK
    for b in b"AT\r\n":                             # (learnt: CR LF, written byte by byte)
        host.write(bytes([b]))
        time.sleep(0.01)
    assert host.read_until(FINAL) == OK
    for b in b"ATO\r":
        host.write(bytes([b]))
        time.sleep(0.01)
    assert host.read_until(FINAL) == b"\r\nCONNECT\r\n"


def test_late_lf_alone_then_a_full_guard_then_plus_plus_plus_escapes(online):
    """ATO's late LF alone 0.3 s after CONNECT, then 1.1 s of silence, "+++", 1.1 s: an
    escape (OK); nothing -- not the LF, not a "+" -- reached the server."""
    host, advance, server = online
    _ato_byte_by_byte(host, advance)
    advance(0.3)
    host.write(b"\n")
    advance(1.1)
    host.write(b"+++")
    advance(1.1)
    assert host.read_until(FINAL) == OK
    time.sleep(0.2)
    assert bytes(server.conn.received) == b""
    assert host.at("AT") == OK


def test_late_lf_alone_breaks_the_silence_before_a_later_plus_plus_plus(online):
    """The late LF alone 0.6 s after CONNECT, "+++" 0.6 s after it (1.2 s after CONNECT):
    the host was not silent for the guard time before "+++" -- data, not an escape; the port
    stays online and "+++" goes to the server."""
    host, advance, server = online
    _ato_byte_by_byte(host, advance)
    advance(0.6)
    host.write(b"\n")
    advance(0.6)
    host.write(b"+++")
    advance(1.5)
    assert host.quiet_for(0.3) == b""
    wait_for(lambda: bytes(server.conn.received) in (b"+++", b"\n+++"), 5, "+++ sent")


# == (4) 58c551f: the peer's close in the loop turn the host closes the port ==========================
def hold_loop(emulator, seconds: float, during=None) -> None:
    """(test_review_changes_1207_a's) keep the emulator's loop busy while `during` runs."""
    def body():
        if during is not None:
            threading.Thread(target=during, daemon=True).start()
        time.sleep(seconds)
    emulator.run(body)


def _peer_close_around_host_close(emulator, open_modem, kind: str, same_turn: bool, data: bytes) -> bytes:
    """Transparent socket 1 open; the server sends `data` (maybe none) and closes, in the loop
    turn the host closes the port or after its hang-up; the next host's AT, ATO and state."""
    from emulator.testing.peers import TlsServer
    host, port = open_modem("ec2x")
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
    with TcpServer("sink") as tcp, TlsServer(mode="sink") as tls:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", tls.port)
        emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", tcp.port)
        if kind == "SSL":
            assert host.at(f'AT+QSSLOPEN=1,1,1,"{HOST}",{PORT},2', timeout=15) == b"\r\nCONNECT\r\n"
            conn = tls.wait_handshake()
        else:
            assert host.at(f'AT+QIOPEN=1,1,"TCP","{TCP_HOST}",{TCP_PORT},0,2', timeout=15) == b"\r\nCONNECT\r\n"
            conn = tcp.wait_connection(0)
        conn.send(b"first")
        assert host.read_exactly(5) == b"first"

        def server_speaks():
            if data:
                conn.send(data)
                time.sleep(0.1)
            conn.close()
        if same_turn:
            def during():
                server_speaks()
                time.sleep(0.6)
                host.close()
            hold_loop(emulator, 1.2, during)
        else:
            host.close()
            wait_for(lambda: not emulator.run(lambda: port.port.attached), 10, "hang-up")
            server_speaks()
            time.sleep(0.5)
        wait_for(lambda: not emulator.run(lambda: port.port.attached), 10, "hang-up")
        time.sleep(0.3)
        again = Host(port.path)
        try:
            emulator.run(port.port.look_for_host)
            out = again.quiet_for(0.3)
            out += again.at("AT")
            out += again.at("ATO")
            state = "AT+QSSLSTATE=1" if kind == "SSL" else "AT+QISTATE=1,1"
            out += again.at(state)
            out += again.quiet_for(0.3)
            return out
        finally:
            again.close()


@pytest.mark.parametrize("kind", ["SSL", "TCP"])
@pytest.mark.parametrize("data", [b"", b"tail"], ids=["close_only", "data_then_close"])
def test_peer_close_in_the_turn_the_host_closes_reads_as_one_after_the_hangup(emulator, open_modem, strict_log, kind, data):
    """The next host sees the same whether the server's close (with or without data) came
    in the loop turn the host closed the port or after its hang-up was handled."""
    same = _peer_close_around_host_close(emulator, open_modem, kind, True, data)
    after = _peer_close_around_host_close(emulator, open_modem, kind, False, data)
    local = re.compile(rb"(,\d+,)\d+(,4,)")            # (the local port differs)
    same, after = local.sub(rb"\1L\2", same), local.sub(rb"\1L\2", after)
    assert same == after
    assert re.fullmatch(rb"\r\nOK\r\n\r\nNO CARRIER\r\n\r\n\+QI?S?S?L?STATE: 1,.*,L,4,1,1,%d,\"usbmodem\"(,1)?\r\n\r\nOK\r\n"
                        % (0 if data else 2), after), after


# == (2) 980e54b: the DTLS sniffer on legit reordering, duplication, loss, re-fragmentation ==========
OPENED = re.compile(rb"\r\n\+QSSLOPEN: 0,(-?\d+)\r\n")


@pytest.fixture
def dtls_servers(pki):
    started: list[OpenSslServer] = []

    def start(*extra: str, version: str = "-dtls1_2") -> OpenSslServer:
        cert, key = pki.server.load_args
        server = OpenSslServer(["-cert", cert, "-key", key, version, "-cipher", "ALL:@SECLEVEL=0", *extra])
        started.append(server)
        return server
    yield start
    for server in started:
        server.stop()


@pytest.fixture
def rt_dtls(open_modem, strict_log):
    """An EC2x on real time (DTLS retransmission timers run), PDP 1 up."""
    host, _ = open_modem("ec2x")
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
    return host


def _raw_records(d: bytes) -> list[tuple[int, bytes, int, int, bytes]]:
    """(type, version, epoch, number, payload) of each whole record of a datagram."""
    out, pos = [], 0
    while pos + 13 <= len(d):
        length = int.from_bytes(d[pos + 11:pos + 13], "big")
        out.append((d[pos], d[pos + 1:pos + 3], int.from_bytes(d[pos + 3:pos + 5], "big"),
                    int.from_bytes(d[pos + 5:pos + 11], "big"), d[pos + 13:pos + 13 + length]))
        pos += 13 + length
    return out


def _rec(ctype: int, version: bytes, epoch: int, number: int, payload: bytes) -> bytes:
    return bytes([ctype]) + version + epoch.to_bytes(2, "big") + number.to_bytes(6, "big") + \
        len(payload).to_bytes(2, "big") + payload


def _refragment(d: bytes) -> list[bytes]:
    """The server's datagram with its epoch-0 record numbers n -> 8n (no MAC covers them),
    and each Certificate fragment cut in three records (8n, 8n+1, 8n+2), each its own
    datagram, the last piece first; the other records in one datagram after them."""
    recs = _raw_records(d)
    if not recs:
        return [d]
    pieces: list[bytes] = []
    rest = bytearray()
    for ctype, version, epoch, number, payload in recs:
        if epoch != 0:
            rest += _rec(ctype, version, epoch, number, payload)
            continue
        flen = int.from_bytes(payload[9:12], "big") if len(payload) >= 12 else -1
        if ctype == CT_HANDSHAKE and payload[:1] == b"\x0b" and len(payload) == 12 + flen and flen >= 30:
            total = int.from_bytes(payload[1:4], "big")
            seq = int.from_bytes(payload[4:6], "big")
            off = int.from_bytes(payload[6:9], "big")
            body = bytes(off) + payload[12:]           # (fragment() slices body[offset:...])
            cuts = [off, off + flen // 3, off + 2 * flen // 3, off + flen]
            frags = []
            for k in range(3):
                frag = bytearray(fragment(11, body + bytes(max(0, total - len(body))), seq, cuts[k], cuts[k + 1] - cuts[k]))
                frags.append(_rec(ctype, version, 0, 8 * number + k, bytes(frag)))
            pieces += list(reversed(frags))
        else:
            rest += _rec(ctype, version, 0, 8 * number, payload)
    return pieces + ([bytes(rest)] if rest else [])


def _flight_rule(mode: str):
    state = {"dropped": False}

    def rule(direction, index, data):
        if mode == "lose_client_flight":              # the server retransmits its whole flight
            if (direction == "c2s" and not state["dropped"]
                    and any(r.type == CT_HANDSHAKE and r.epoch == 0 and r.payload[:1] == b"\x10"
                            for r in records(data))):
                state["dropped"] = True
                return []
            return [data]
        if direction != "s2c":
            return [data]
        if mode == "lose_server_hello":
            if not state["dropped"] and any(r.type == CT_HANDSHAKE and r.epoch == 0 and r.payload[:1] == b"\x02"
                                            for r in records(data)):
                state["dropped"] = True
                return []
            return [data]
        if mode == "duplicate":
            return [data, (0.02, data)]
        if mode == "reverse":
            return [(max(0.0, 0.5 - 0.06 * index), data)]
        if mode == "refragment":
            return list(_refragment(data))
        if mode == "lose_certificate":
            if not state["dropped"] and any(r.type == CT_HANDSHAKE and r.epoch == 0 and r.payload[:1] == b"\x0b"
                                            for r in records(data)):
                state["dropped"] = True
                return []
            return [data]
        raise AssertionError(mode)
    return rule


def _dtls_open(host, emulator, server, mode: str, version: int | None = None,
               configure: bool = True) -> tuple[int, object]:
    with UdpMiddlebox(server.address, _flight_rule(mode)) as box:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", box.port)
        if configure:                                  # (a QSSLCFG write forgets the sessions)
            cfg(host, "dtls", 0, 1)
        if version is not None:
            cfg(host, "dtlsversion", 0, version)
        assert host.at(f'AT+QSSLOPEN=1,0,0,"{HOST}",{PORT}') == OK
        line = host.read_until(OPENED, 30)     # (a full run under load: 15 s were too few for
        code = int(OPENED.search(line).group(1))   # DTLS's retransmit timers, 1+2+4+8 s)
        assert host.quiet_for(0.3) == b""
        if code == 0:
            assert host.send_data(0, b"up through the box\n") == b"\r\nSEND OK\r\n"
            server.wait_for_output(rb"up through the box", 10)
        mark = len(server.stdout)
        assert host.at("AT+QSSLCLOSE=0") == OK
        if code == 0:
            # the close_notify through the box before the box closes: under load the box's
            # thread had not relayed it yet, s_server stayed with the old peer and ignored
            # the next open's ClientHellos from the next box (a full run: no answer in 30 s)
            server.wait_for_output(rb"DONE", 10, since=mark)
        return code, box


MODES = ["duplicate", "reverse", "refragment", "lose_certificate", "lose_server_hello", "lose_client_flight"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("mtu", [None, 400], ids=["whole", "mtu400"])
def test_dtls12_server_flight_mangled_legitimately_opens_verified(rt_dtls, emulator, dtls_servers, pki, mode, mtu):
    """seclevel 1, the trusted CA, `s_server -dtls1_2` (its flight whole, or cut by -mtu 400
    into Certificate fragments over several datagrams): every datagram duplicated, the
    flight's datagrams reversed, each Certificate fragment re-cut into three records sent
    last piece first, or the first Certificate datagram lost (the flight retransmitted):
    +QSSLOPEN: 0,0 once, data go up."""
    host = rt_dtls
    server = dtls_servers(*(["-mtu", str(mtu)] if mtu else []))
    trust(host, 0, pki.ca.cert_pem)
    code, box = _dtls_open(host, emulator, server, mode)
    assert code == 0
    certs = [d for d in box.log if d.direction == "s2c" and any(
        r.type == CT_HANDSHAKE and r.epoch == 0 and r.payload[:1] == b"\x0b" for r in records(d.data))]
    assert len(certs) >= (3 if mtu else 1)            # (the Certificate did come, cut by -mtu)
    if mode.startswith("lose"):
        assert any(d.dropped for d in box.log)
    assert host.at("AT") == OK


@pytest.mark.parametrize("mode", ["reverse", "refragment"])
def test_dtls10_server_flight_mangled_legitimately_opens_verified(rt_dtls, emulator, dtls_servers, pki, mode):
    """The same against `s_server -dtls1` with dtlsversion 0 (DTLS 1.0 records only)."""
    host = rt_dtls
    server = dtls_servers("-mtu", "400", version="-dtls1")
    trust(host, 0, pki.ca.cert_pem)
    code, _ = _dtls_open(host, emulator, server, mode, version=0)
    assert code == 0


def test_dtls_seclevel_2_with_a_reordered_flight_opens(rt_dtls, emulator, dtls_servers, pki):
    """seclevel 2 (client certificate, the server asks for it with -Verify): the server's
    flight (with its CertificateRequest) reversed and re-cut: +QSSLOPEN: 0,0."""
    host = rt_dtls
    assert host.upload("UFS:cli.pem", pki.client.cert_pem).endswith(OK)
    assert host.upload("UFS:cli.key", pki.client.key_pem).endswith(OK)
    cfg(host, "clientcert", 0, '"UFS:cli.pem"')
    cfg(host, "clientkey", 0, '"UFS:cli.key"')
    server = dtls_servers("-Verify", "1", "-CAfile", str(pki.ca.cert_path), "-mtu", "400")
    trust(host, 0, pki.ca.cert_pem, seclevel=2)
    code, _ = _dtls_open(host, emulator, server, "refragment")
    assert code == 0


def test_dtls_resumed_session_after_a_mangled_full_handshake(rt_dtls, emulator, dtls_servers, pki):
    """session_cache 1: the first open (flight reversed) verifies, the second resumes (no
    Certificate in its flight) -- both +QSSLOPEN: 0,0."""
    host = rt_dtls
    server = dtls_servers("-mtu", "400")
    trust(host, 0, pki.ca.cert_pem, session_cache=False)
    cfg(host, "session_cache", 0, 1)
    assert _dtls_open(host, emulator, server, "reverse")[0] == 0
    mark = len(server.stdout)
    code, box = _dtls_open(host, emulator, server, "duplicate", configure=False)
    assert code == 0
    assert b"Reused" in server.stdout[mark:], server.stdout[mark:][-600:]


@pytest.mark.parametrize("mode", ["reverse", "refragment", "lose_server_hello"])
def test_dtls_stateless_listen_server_mangled_flight_opens_verified(rt_dtls, emulator, dtls_servers, pki, mode):
    """`s_server -listen` (a stateless cookie exchange: its HelloVerifyRequest reuses the
    ClientHello's record number) with the flight mangled: +QSSLOPEN: 0,0."""
    host = rt_dtls
    server = dtls_servers("-listen", "-mtu", "400")
    trust(host, 0, pki.ca.cert_pem)
    code, _ = _dtls_open(host, emulator, server, mode)
    assert code == 0


def test_ml302_cfun_reset_with_atv0_inside_a_line_then_cpin_ready_opens_the_port(ml302_strict):
    """The ML302, ATV0 (not saved): AT+CFUN=1,1;+CMEE=0 -> "0<CR>"; a poll in the gap is lost;
    its first start-up line, +CPIN: READY (verbose again: AT&W's set), opens the port;
    +CMEE=0 never ran."""
    host, advance, _ = ml302_strict
    host.write(b"ATV0\r")
    assert host.read_until(b"0\r") == b"0\r"
    host.write(b"AT+CFUN=1,1;+CMEE=0\r")
    assert host.read_until(b"0\r") == b"0\r"
    host.write(b"AT\r")
    assert host.quiet_for(0.2) == b""
    advance(0.05)
    assert host.read_until(b"\r\n+CPIN: READY\r\n") == b"\r\n+CPIN: READY\r\n"
    assert host.quiet_for(0.2) == b""
    assert host.at("AT+CMEE?") == b"AT+CMEE?\r\r\n+CMEE: 1\r\n" + OK


# -- record version fe fe: Mbed TLS reads it as DTLS 1.0 (mbedtls_ssl_read_version) -----------------
def _forged_certificate(pki, *, version: bytes = b"\xfe\xfd", seq: int = 3) -> bytes:
    """An epoch-0 record with the untrusted server's Certificate, message_seq 2."""
    from emulator.testing.peers.dtls_wire import certificate_message, handshake, record
    body = certificate_message(pki.wrong_server.cert_pem, msg_seq=2)[12:]
    return record(CT_HANDSHAKE, handshake(11, body, 2), seq=seq, version=version)


def _ahead(version: bytes, seq: int) -> bytes:
    """A harmless epoch-0 record: a handshake message far ahead (read and ignored)."""
    from emulator.testing.peers.dtls_wire import handshake, record
    return record(CT_HANDSHAKE, handshake(11, b"\x00\x00\x00", 30), seq=seq, version=version)


def _open_after_spoofs(host, emulator, server, spoofs: list[bytes], version: int | None = None) -> tuple[int, bytes]:
    """The spoofed datagrams reach the modem just before the server's ServerHello flight;
    the open's one answer, and its line."""
    sent = []

    def rule(direction, index, data):
        if direction == "s2c" and not sent and any(r.type == CT_HANDSHAKE and r.payload[:1] == b"\x02"
                                                   for r in records(data)):
            sent.append(index)
            return [*spoofs, (0.05, data)]
        return [data]

    with UdpMiddlebox(server.address, rule) as box:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", box.port)
        cfg(host, "dtls", 0, 1)
        if version is not None:
            cfg(host, "dtlsversion", 0, version)
        assert host.at(f'AT+QSSLOPEN=1,0,0,"{HOST}",{PORT}') == OK
        line = host.read_until(OPENED, 15)
        assert host.quiet_for(0.3) == b""
        assert sent
        assert host.at("AT+QSSLCLOSE=0") == OK
    return int(OPENED.search(line).group(1)), line


@pytest.mark.parametrize("version, code", [(b"\xfe\xfe", 566), (b"\xfe\xfd", 566), (b"\xfe\xfc", 0)],
                         ids=["fefe", "fefd", "fefc"])
def test_premise_mbedtls_alone_takes_a_record_versioned_fe_fe(rt_dtls, emulator, dtls_servers, pki, version, code):
    """seclevel 0 (no sniffer check: Mbed TLS alone): the forged Certificate just before the
    flight spoils the handshake (566) when Mbed TLS takes its record -- in fe fe (DTLS 1.0 to
    Mbed TLS's version parser) as in fe fd; in fe fc (above DTLS 1.2) it is dropped (0)."""
    host = rt_dtls
    cfg(host, "seclevel", 0, 0)
    assert _open_after_spoofs(host, emulator, dtls_servers(), [_forged_certificate(pki, version=version)])[0] == code


DTLS_VERSIONS = pytest.mark.parametrize("dv, server_version, cert_version", [
    (None, "-dtls1_2", b"\xfe\xfd"), (0, "-dtls1", b"\xfe\xff")], ids=["dtls12", "dtls10"])


@DTLS_VERSIONS
def test_premise_mbedtls_alone_drops_a_certificate_replaying_a_fe_fe_records_number(
        rt_dtls, emulator, dtls_servers, pki, dv, server_version, cert_version):
    """seclevel 0: a harmless spoofed record numbered 40 in version fe fe, then the forged
    Certificate under the same number 40: Mbed TLS took the first, so it drops the second
    as a replay -- the open is 0.  (Control: the fe fe record numbered 41 instead: 566.)"""
    host = rt_dtls
    cfg(host, "seclevel", 0, 0)
    for first, code in ((40, 0), (41, 566)):
        spoofs = [_ahead(b"\xfe\xfe", first), _forged_certificate(pki, seq=40, version=cert_version)]
        assert _open_after_spoofs(host, emulator, dtls_servers(version=server_version), spoofs, dv)[0] == code


@DTLS_VERSIONS
def test_forged_certificate_replaying_a_fe_fe_records_number_cannot_fail_a_trusted_server(
        rt_dtls, emulator, dtls_servers, pki, strict_log, dv, server_version, cert_version):
    """seclevel 1, the trusted server: the same two spoofs.  Mbed TLS uses the server's real
    Certificate (as the premise shows); the check must have judged that one: +QSSLOPEN: 0,0."""
    host = rt_dtls
    trust(host, 0, pki.ca.cert_pem)
    spoofs = [_ahead(b"\xfe\xfe", 40), _forged_certificate(pki, seq=40, version=cert_version)]
    code, line = _open_after_spoofs(host, emulator, dtls_servers(version=server_version), spoofs, dv)
    reasons = " | ".join(r.getMessage() for r in strict_log.records if "566" in r.getMessage())
    assert code == 0, reasons

