"""Review 1207 f: adversarial checks of e46a6af / dce7cdf (shaped links' loss-only packets and
a datagram socket's close letting queued datagrams go; AT+QIDEACT's freed ids (_reuse);
terminal-capture payload parsing; trace show --modem of a missing modem).  Exact bytes."""
from __future__ import annotations

import socket
import time

import pytest

from tests.e2e import replay_support as rs
from tests.e2e.socket_support import UDP_HOST, UDP_PORT, free_port, qiopen
from tests.e2e.test_adversarial_field_tools_7 import _replay, _show

OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"
CSQ = b"\r\n+CSQ: 24,99\r\n"


@pytest.fixture
def udp_peer(emulator):
    """A bare UDP socket that UDP_HOST:UDP_PORT is routed to (it answers nothing itself)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(0.1)
    emulator.router.add_map(UDP_HOST, UDP_PORT, "127.0.0.1", s.getsockname()[1])
    yield s
    s.close()


def got_datagrams(s, advance=None, rounds=10) -> list[tuple[bytes, int]]:
    out = []
    for _ in range(rounds):
        if advance is not None:
            advance(0.1)
        try:
            while True:
                data, addr = s.recvfrom(2000)
                out.append((data, addr[1]))
        except (socket.timeout, BlockingIOError):
            pass
    return out


def send(host, cid: int, data: bytes) -> None:
    host.write(b"AT+QISEND=%d,%d\r" % (cid, len(data)))
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(data)
    assert host.read_until(b"SEND OK\r\n") == b"\r\nSEND OK\r\n"


# == shaped links ===============================================================================
def test_udp_client_close_with_latency_lets_the_sent_datagram_arrive(emulator, ec2x_strict, udp_peer):
    host, advance, _ = ec2x_strict
    assert emulator.control("net", latency_ms=500) == {"ok": True}
    qiopen(host, 0, "UDP", UDP_HOST, UDP_PORT)
    send(host, 0, b"hello")
    assert host.at("AT+QICLOSE=0") + host.quiet_for(0.2) == OK
    got = got_datagrams(udp_peer, advance)
    assert [d for d, _ in got] == [b"hello"]
    assert host.quiet_for(0.2) == b""
    assert emulator.control("net", latency_ms=0) == {"ok": True}


def test_udp_close_then_reply_on_the_lingering_link_is_not_news_of_the_reopened_id(
        emulator, ec2x_strict, udp_peer):
    """The old socket is closed and its id opened again while its datagram is still on the
    link; the peer's answer to the OLD port must not reach the host as the new socket's."""
    host, advance, _ = ec2x_strict
    assert emulator.control("net", latency_ms=300) == {"ok": True}
    qiopen(host, 0, "UDP", UDP_HOST, UDP_PORT)
    send(host, 0, b"ping")
    assert host.at("AT+QICLOSE=0") == OK
    qiopen(host, 0, "UDP", UDP_HOST, UDP_PORT)
    advance(0.35)
    time.sleep(0.1)
    data, addr = udp_peer.recvfrom(100)
    assert data == b"ping"
    udp_peer.sendto(b"stale", addr)                  # to the closed socket's port
    for _ in range(8):
        advance(0.1)
        time.sleep(0.05)
    assert host.quiet_for(0.3) == b""
    assert host.at("AT+QIRD=0,100") == b"\r\n+QIRD: 0\r\n" + OK
    assert host.at("AT+QICLOSE=0") == OK
    assert emulator.control("net", latency_ms=0) == {"ok": True}


def test_udp_service_close_with_latency_lets_the_sent_datagram_arrive(emulator, ec2x_strict, udp_peer):
    host, advance, _ = ec2x_strict
    assert emulator.control("net", latency_ms=400) == {"ok": True}
    lport = free_port(socket.SOCK_DGRAM)
    qiopen(host, 2, "UDP SERVICE", "127.0.0.1", 0, lport)
    dst = udp_peer.getsockname()[1]
    host.write(b'AT+QISEND=2,3,"127.0.0.1",%d\r' % dst)
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(b"abc")
    assert host.read_until(b"SEND OK\r\n") == b"\r\nSEND OK\r\n"
    assert host.at("AT+QICLOSE=2") == OK
    assert got_datagrams(udp_peer, advance) == [(b"abc", lport)]
    # the port is free again at once for a new UDP SERVICE
    qiopen(host, 2, "UDP SERVICE", "127.0.0.1", 0, lport)
    assert host.at("AT+QICLOSE=2") == OK
    assert emulator.control("net", latency_ms=0) == {"ok": True}


def test_qideact_with_a_queued_datagram_still_sends_it(emulator, ec2x_strict, udp_peer):
    host, advance, _ = ec2x_strict
    assert emulator.control("net", latency_ms=500) == {"ok": True}
    qiopen(host, 0, "UDP", UDP_HOST, UDP_PORT)
    send(host, 0, b"sent")
    assert host.at("AT+QIDEACT=1") + host.quiet_for(0.3) == OK + b'\r\n+QIURC: "closed",0\r\n'
    assert [d for d, _ in got_datagrams(udp_peer, advance)] == [b"sent"]
    assert host.at("AT+QICLOSE=0") == OK
    assert emulator.control("net", latency_ms=0) == {"ok": True}


def test_drop_op_on_a_shaped_udp_socket_is_refused_and_the_socket_still_works(emulator, ec2x_strict, udp_peer):
    host, advance, _ = ec2x_strict
    assert emulator.control("net", latency_ms=300) == {"ok": True}
    qiopen(host, 0, "UDP", UDP_HOST, UDP_PORT)
    assert emulator.control("drop", socket=0, how="close") == {"ok": False, "error":
        'drop: socket 0 is a UDP socket: it has no connection to close (how="blackhole" stops its packets)'}
    send(host, 0, b"after")
    assert [d for d, _ in got_datagrams(udp_peer, advance)] == [b"after"]
    assert host.quiet_for(0.2) == b""
    assert host.at("AT+QICLOSE=0") == OK
    assert emulator.control("net", latency_ms=0) == {"ok": True}


def test_tcp_loss_only_keeps_the_stream_in_order(emulator, ec2x_strict, tcp_echo):
    """Loss only: a lost segment waits an RTO; the ones sent after it at once must not
    overtake it (the echo gives the bytes back in the order sent)."""
    host, advance, _ = ec2x_strict
    qiopen(host, 0)
    assert emulator.control("net", loss=0.5, seed=7) == {"ok": True}
    sent = b""
    for i in range(12):
        chunk = b"<%02d>" % i
        send(host, 0, chunk)
        sent += chunk
    for _ in range(30):
        advance(0.1)
        time.sleep(0.02)
    host.quiet_for(0.3)
    assert emulator.control("net", loss=0) == {"ok": True}
    got = b""
    for _ in range(10):
        r = host.at("AT+QIRD=0,1500")
        head, _, rest = r.partition(b"\r\n+QIRD: ")
        n = int(rest.split(b"\r\n", 1)[0])
        if n == 0:
            break
        got += rest.split(b"\r\n", 1)[1][:n]
    assert got == sent


def test_udp_loss_only_on_manual_time_goes_at_once(emulator, ec2x_strict, udp_peer):
    host, advance, _ = ec2x_strict
    assert emulator.control("net", loss=0.0001, seed=1) == {"ok": True}
    qiopen(host, 0, "UDP", UDP_HOST, UDP_PORT)
    send(host, 0, b"now")
    assert [d for d, _ in got_datagrams(udp_peer, None, 5)] == [b"now"]     # no clock advanced
    assert host.at("AT+QICLOSE=0") == OK
    assert emulator.control("net", loss=0) == {"ok": True}


# == AT+QIDEACT's freed ids ======================================================================
def test_qideact_then_reopen_in_a_later_line_closed_written_once(ec2x_strict, tcp_echo):
    host, advance, _ = ec2x_strict
    qiopen(host, 0)
    assert host.at("AT+QIDEACT=1") + host.quiet_for(0.3) == OK + b'\r\n+QIURC: "closed",0\r\n'
    assert host.at("AT+QIACT=1") == OK
    got = host.at('AT+QIOPEN=1,0,"UDP SERVICE","127.0.0.1",0,%d,0' % free_port(socket.SOCK_DGRAM))
    got += host.read_until(b"+QIOPEN: 0,0\r\n") + host.quiet_for(0.3)
    assert got == OK + b"\r\n+QIOPEN: 0,0\r\n", got
    assert host.at("AT+QICLOSE=0") + host.quiet_for(0.2) == OK


def test_qideact_cfun_restart_then_reopen(ec2x_strict, tcp_echo):
    host, advance, _ = ec2x_strict
    qiopen(host, 0)
    assert host.at("AT+QIDEACT=1") + host.quiet_for(0.3) == OK + b'\r\n+QIURC: "closed",0\r\n'
    host.write(b"AT+CFUN=1,1\r")
    assert host.read_until(OK) == OK
    for _ in range(40):
        advance(0.5)
        if b"PB DONE" in host.seen(b""):
            break
    host.read_until(b"PB DONE\r\n", timeout=15)
    host.quiet_for(0.3)
    assert host.at("ATE0") == b"ATE0\r" + OK
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
    qiopen(host, 0)
    assert host.quiet_for(0.3) == b""
    assert host.at("AT+QICLOSE=0") == OK


# == trace: terminal captures =====================================================================
def capture(tmp_path, open_modem, payload: bytes, name="cap.log"):
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
    assert host.read_until(payload + b"\r\nSEND OK\r\n") == payload + b"\r\nSEND OK\r\n"
    assert host.at("AT+CSQ") == b"AT+CSQ\r" + CSQ + OK
    assert host.at("AT+QICLOSE=0") == b"AT+QICLOSE=0\r" + OK
    path = tmp_path / name
    path.write_bytes(bytes(host.transcript))
    return path


@pytest.mark.parametrize("payload", [b"x\r\nOK", b"SEND OK\r\nz", b"q\r\nERROR\r\nw", b"AT+CSQ\r\nk"],
                         ids=["ok", "sendok", "error", "atline"])
def test_capture_payload_lines_that_look_like_results_replay(tmp_path, open_modem, payload):
    path = capture(tmp_path, open_modem, payload)
    assert _replay(path) == (0, "replayed 6 lines: no difference\n")


def test_trace_show_of_a_missing_modem_exits_2(tmp_path, emulator, open_modem):
    path = tmp_path / "t.trace"
    host, _ = open_modem("ec2x", trace=str(path))
    assert host.at("AT+CSQ") == CSQ + OK
    rs.flush(emulator)
    rc, out = _show(path, "--modem", "3")
    assert rc == 2
    assert out == f"modem-emulator trace show: {path}: no modem 3 in the trace (it has: 0)\n"
    rc, out = _show(path, "--modem", "0")
    assert rc == 0 and "AT+CSQ" in out


@pytest.mark.xfail(strict=True, reason="LIMIT (README, replay: terminal captures): a terminal capture of "
                   "AT+QFUPL holds no upload data (the module never echoes them): it cannot replay (+CME ERROR: 421)")
def test_capture_with_a_qfupl_upload_whose_data_look_like_results_replays(tmp_path, open_modem):
    host, _ = open_modem("ec2x", echo=True)
    data = b"OK\r\nERROR\r\n"
    line = b'AT+QFUPL="RAM:f.txt",%d' % len(data)
    host.write(line + b"\r")
    assert host.read_until(b"CONNECT\r\n") == line + b"\r\r\nCONNECT\r\n"
    host.write(data)
    assert host.read_until(OK) == b"\r\n+QFUPL: 11,d51\r\n" + OK
    assert host.at('AT+QFDEL="RAM:f.txt"') == b'AT+QFDEL="RAM:f.txt"\r' + OK
    path = tmp_path / "up.log"
    path.write_bytes(bytes(host.transcript))
    assert _replay(path) == (0, "replayed 2 lines: no difference\n")


def test_capture_with_a_urc_during_the_payload_prompt_replays(tmp_path, emulator, open_modem):
    host, _ = open_modem("ec2x", echo=True)
    line = b'AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1'
    assert host.at(line) == line + b"\r" + OK
    lport = free_port(socket.SOCK_DGRAM)
    line = b'AT+QIOPEN=1,0,"UDP SERVICE","127.0.0.1",0,%d,0' % lport
    assert host.at(line) + host.read_until(b"+QIOPEN: 0,0\r\n") == line + b"\r" + OK + b"\r\n+QIOPEN: 0,0\r\n"
    line = b'AT+QISEND=0,4,"127.0.0.1",%d' % free_port(socket.SOCK_DGRAM)
    host.write(line + b"\r")
    assert host.read_until(b"> ") == line + b"\r\r\n> "
    assert emulator.control("urc", text="+QIND: 7") == {"ok": True}
    assert host.quiet_for(0.3) == b""                # (held while the prompt waits)
    host.write(b"ab\r\n")
    got = host.read_until(b"SEND OK\r\n") + host.quiet_for(0.4)
    assert got == b"ab\r\n\r\nSEND OK\r\n\r\n+QIND: 7\r\n", got
    assert host.at("AT+QICLOSE=0") == b"AT+QICLOSE=0\r" + OK
    path = tmp_path / "urc.log"
    path.write_bytes(bytes(host.transcript))
    scenario = tmp_path / "u.toml"
    scenario.write_text('[[step]]\nafter = { command = "+QISEND" }\nop = "urc"\ntext = "+QIND: 7"\n')
    assert _replay(path, "--scenario", str(scenario)) == (0, "replayed 5 lines: no difference\n")


def test_real_time_udp_close_with_latency_then_reopen_same_line(emulator, open_modem, udp_peer):
    """Real time: the queued datagram of the socket closed and reopened on one line arrives
    once, after the latency; the new socket's datagram after it; nothing else is said."""
    host, _ = open_modem("ec2x")
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
    assert emulator.control("net", latency_ms=200, loss=0.0001, seed=3) == {"ok": True}
    qiopen(host, 0, "UDP", UDP_HOST, UDP_PORT)
    send(host, 0, b"one")
    got = host.at('AT+QICLOSE=0;+QIOPEN=1,0,"UDP","%s",%d,0,0' % (UDP_HOST, UDP_PORT))
    got += host.read_until(b"+QIOPEN: 0,0\r\n")
    assert got == OK + b"\r\n+QIOPEN: 0,0\r\n", got
    send(host, 0, b"two")
    time.sleep(0.5)
    got = got_datagrams(udp_peer, None, 5)
    assert [d for d, _ in got] == [b"one", b"two"] and got[0][1] != got[1][1], got
    assert host.quiet_for(0.2) == b""
    assert host.at("AT+QICLOSE=0") == OK
    assert emulator.control("net", latency_ms=0, loss=0) == {"ok": True}


@pytest.mark.parametrize("cond", [{"latency_ms": 300}, {"loss": 0.5, "seed": 11}], ids=["latency", "loss"])
def test_tcp_qiclose_on_a_shaped_link_delivers_what_send_ok_accepted(emulator, open_modem, cond):
    from tests.e2e.socket_support import TCP_HOST, TCP_PORT
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", ls.getsockname()[1])
    host, _ = open_modem("ec2x")
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
    qiopen(host, 0)
    c, _ = ls.accept()
    try:
        assert emulator.control("net", **cond) == {"ok": True}
        sent = b""
        for i in range(6):
            send(host, 0, b"[%d]" % i)
            sent += b"[%d]" % i
        host.write(b"AT+QICLOSE=0\r")
        c.settimeout(3)
        got = b""
        while True:
            d = c.recv(100)
            if not d:
                break
            got += d
        c.close()
        assert host.read_until(OK, 5) + host.quiet_for(0.2) == OK
        assert got == sent
    finally:
        c.close()
        ls.close()
        emulator.control("net", latency_ms=0, loss=0)


def test_capture_with_a_slash_repeat_interrupted_by_a_urc_replays(tmp_path, emulator, open_modem):
    """A/ (repeat the last line) is typed as two characters a URC may split, as AT is."""
    from tests.e2e.test_review_changes_1207_e import interrupted
    host, _ = open_modem("ec2x", echo=True)
    assert host.at("AT+CSQ") == b"AT+CSQ\r" + CSQ + OK
    got = interrupted(emulator, host, b"A", ["+QIND: 9"], b"/")
    assert got == b"A\r\n+QIND: 9\r\n/" + CSQ + OK, got
    path = tmp_path / "rep.log"
    path.write_bytes(bytes(host.transcript))
    scenario = tmp_path / "u.toml"
    # (as the repeat arrives, before its answer: where the capture has it once made whole)
    scenario.write_text('[[step]]\nwhen = { command = "+CSQ", count = 2 }\nop = "urc"\ntext = "+QIND: 9"\n')
    assert _replay(path, "--scenario", str(scenario)) == (0, "replayed 2 lines: no difference\n")


def test_a_reboot_loses_the_datagrams_still_on_a_shaped_link(emulator, ec2x_strict, udp_peer):
    """docs/behaviour.md: a reboot is a power cut -- unlike the host's close (above), it does not
    let the datagrams still held by a `net` latency go: the peer gets nothing."""
    host, advance, _ = ec2x_strict
    assert emulator.control("net", latency_ms=500) == {"ok": True}
    qiopen(host, 0, "UDP", UDP_HOST, UDP_PORT)
    send(host, 0, b"lost")
    assert emulator.control("reboot", ms=0) == {"ok": True}
    assert got_datagrams(udp_peer, advance) == []
    assert emulator.control("net", latency_ms=0) == {"ok": True}
