"""Trace and replay (emulator/tools/trace.py): a traced session over the pty writes every
byte, each command with its answer and the sockets' TLS events and plaintext; `trace show`
renders it; replaying it on a fresh modem (no server: the recorded plaintext stands in)
gives no difference, and a changed answer is named; a plain >>/<< AT log replays too."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from emulator.testing.peers import TlsServer, reply_after
from emulator.testing.peers.openssl import OpenSslServer
from emulator.tools.trace import replay_main, show_main

HOST = "220.180.239.212"


def traced_session(open_modem, emulator, pki, path) -> None:
    host, _ = open_modem("ec2x", trace=str(path))
    with TlsServer(pki.server, handler=reply_after(18, b"Test data from SSL")) as server:
        emulator.router.add_map(HOST, 8010, "127.0.0.1", server.port)
        assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
        assert host.upload("UFS:ca.pem", pki.ca.cert_pem).startswith(b"\r\n+QFUPL: ")
        assert host.at('AT+QSSLCFG="seclevel",1,1;+QSSLCFG="cacert",1,"UFS:ca.pem"') == b"\r\nOK\r\n"
        assert host.at(f'AT+QSSLOPEN=1,1,4,"{HOST}",8010,0') == b"\r\nOK\r\n"
        host.read_until(b"\r\n+QSSLOPEN: 4,0\r\n")
        assert host.at("AT+QSSLSTATE=4").startswith(b'\r\n+QSSLSTATE: 4,"SSLClient"')   # a local port
        assert host.send_data(4, b"Test data from SSL") == b"\r\nSEND OK\r\n"
        host.read_until(b'\r\n+QSSLURC: "recv",4\r\n')
        assert host.at("AT+QSSLRECV=4,1500") == b"\r\n+QSSLRECV: 18\r\nTest data from SSL\r\n\r\nOK\r\n"
        assert host.at("AT+QSSLCLOSE=4") == b"\r\nOK\r\n"
        assert host.at("AT+CSQ").endswith(b"OK\r\n")
    # The host reads an answer as the loop writes it; the record of that command follows in the
    # same loop callback: one round trip on the loop and the trace is complete.
    emulator.run(lambda: None)


def test_a_traced_session_records_bytes_commands_and_sockets(open_modem, emulator, pki, tmp_path):
    path = tmp_path / "session.trace"
    traced_session(open_modem, emulator, pki, path)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert all("t" in r and r["modem"] == 0 for r in records)
    assert (path.stat().st_mode & 0o777) == 0o600
    kinds = [r["kind"] for r in records]
    assert kinds[0] == "start" and records[0]["profile"] == "ec2x"
    host_in = "".join(r["data"] for r in records if r["kind"] == "io" and r["dir"] == "in")
    assert 'AT+QSSLOPEN=1,1,4,"220.180.239.212",8010,0\r' in host_in and "Test data from SSL" in host_in
    cmds = {r["line"]: r["answer"] for r in records if r["kind"] == "cmd"}
    assert cmds["AT+QSSLSEND=4,18"] == "\r\n> \r\nSEND OK\r\n"
    assert cmds["AT+QSSLRECV=4,1500"] == "\r\n+QSSLRECV: 18\r\nTest data from SSL\r\n\r\nOK\r\n"
    assert any(line.startswith("AT+QFUPL=") for line in cmds)
    sock = [r for r in records if r.get("socket") == 4]
    assert [r["kind"] for r in sock] == ["open", "connected", "handshake", "open_result", "sent", "received", "close"]
    assert sock[2]["version"].startswith("TLSv1") and sock[2]["cipher"]
    assert sock[3]["code"] == 0
    assert sock[4]["data"] == sock[5]["data"] == "Test data from SSL"


def test_trace_show_renders_lines_events_and_hexdumps(open_modem, emulator, pki, tmp_path, capsys):
    path = tmp_path / "session.trace"
    traced_session(open_modem, emulator, pki, path)
    capsys.readouterr()
    assert show_main([str(path)]) == 0
    text = capsys.readouterr().out
    assert re.search(r'^ +\+\d+\.\d{3}s m0 >> AT\+QSSLOPEN=1,1,4,"220\.180\.239\.212",8010,0\\r$', text, re.M)
    assert re.search(r"^ +\+\d+\.\d{3}s m0 << \+QSSLOPEN: 4,0\\r\\n$", text, re.M)
    assert re.search(r"socket 4 handshake TLSv1\.\d \S+", text)
    assert re.search(r"socket 4 received 18 bytes\n +00000000  54 65 73 74 20 64 61 74 61 20 66 72 6f 6d 20 53"
                     r"  \|Test data from S\|\n +00000010  53 4c +\|SL\|", text)
    assert show_main([str(path), "--socket", "4"]) == 0
    only = capsys.readouterr().out
    assert "socket 4 open 220.180.239.212:8010" in only and ">>" not in only and "<<" not in only


def test_a_trace_replays_with_no_difference_and_a_changed_one_names_its_first(open_modem, emulator, pki,
                                                                              tmp_path, capsys):
    path = tmp_path / "session.trace"
    traced_session(open_modem, emulator, pki, path)
    capsys.readouterr()
    assert replay_main([str(path)]) == 0, capsys.readouterr().out
    assert "no difference" in capsys.readouterr().out
    # One recorded answer changed: the replay names that command and both answers.
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        r = json.loads(line)
        if r["kind"] == "cmd" and r["line"] == "AT+QSSLRECV=4,1500":
            r["answer"] = r["answer"].replace("Test data", "Best data")
            lines[i] = json.dumps(r)
    changed = tmp_path / "changed.trace"
    changed.write_text("\n".join(lines) + "\n")
    assert replay_main([str(changed)]) == 1
    out = capsys.readouterr().out
    assert "AT+QSSLRECV=4,1500" in out
    assert "expected: \\r\\n+QSSLRECV: 18\\r\\nBest data from SSL" in out
    assert "got:      \\r\\n+QSSLRECV: 18\\r\\nTest data from SSL" in out


def test_a_plain_at_log_replays(tmp_path, capsys):
    log = tmp_path / "host.log"
    log.write_text(">> ATE0\n<< OK\n>> AT+CMEE=2\n<< OK\n>> AT+QSSLCFG=\"seclevel\",1,7\n<< ERROR\n"
                   '>> AT+QSSLCFG="seclevel",1,1\n<< OK\n>> AT+QSSLCFG="seclevel",1\n'
                   '<< +QSSLCFG: "seclevel",1,1\n<< OK\n')
    assert replay_main([str(log)]) == 0, capsys.readouterr().out
    log.write_text(">> ATE0\n<< OK\n>> AT+QSSLCFG=\"seclevel\",1\n<< +QSSLCFG: \"seclevel\",1,2\n<< OK\n")
    assert replay_main([str(log)]) == 1
    out = capsys.readouterr().out
    assert 'step 2 (AT+QSSLCFG="seclevel",1)' in out and "+QSSLCFG: \"seclevel\",1,0" in out


def test_a_failed_open_and_a_peer_close_replay(open_modem, emulator, pki, tmp_path, capsys):
    """The stand-in server ends the handshake as recorded (a certificate the CA did not
    sign: 566) and closes where the recorded server did (the "closed" URC)."""
    path = tmp_path / "close.trace"
    host, _ = open_modem("ec2x", trace=str(path))
    with TlsServer(pki.server, handler=lambda conn: conn.sendall(b"bye")) as server:
        emulator.router.add_map(HOST, 8010, "127.0.0.1", server.port)
        assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
        host.upload("UFS:wrong.pem", pki.wrong_ca.cert_pem)
        assert host.at('AT+QSSLCFG="seclevel",2,1;+QSSLCFG="cacert",2,"UFS:wrong.pem"') == b"\r\nOK\r\n"
        assert host.at(f'AT+QSSLOPEN=1,2,1,"{HOST}",8010,0') == b"\r\nOK\r\n"
        host.read_until(b"\r\n+QSSLOPEN: 1,566\r\n")
        assert host.at(f'AT+QSSLOPEN=1,1,2,"{HOST}",8010,0') == b"\r\nOK\r\n"
        host.read_until(b"\r\n+QSSLOPEN: 2,0\r\n")
        host.read_until(b'\r\n+QSSLURC: "closed",2\r\n')
        assert host.at("AT+QSSLRECV=2,100") == b"\r\n+QSSLRECV: 3\r\nbye\r\n\r\nOK\r\n"
        assert host.at("AT+QSSLCLOSE=2") == b"\r\nOK\r\n"
    emulator.run(lambda: None)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    results = [(r["socket"], r["code"], r["failure"]) for r in records if r["kind"] == "open_result"]
    assert results[0][:2] == (1, 566) and results[1] == (2, 0, None)
    closed = next(r for r in records if r["kind"] == "peer_closed")
    assert closed["socket"] == 2 and closed["how"] in ("close_notify", "fin")
    capsys.readouterr()
    assert replay_main([str(path)]) == 0, capsys.readouterr().out


def test_a_transparent_session_replays(open_modem, emulator, pki, tmp_path, capsys):
    """Online data mode: the host's bytes go to the socket as they come; "+++" needs its
    guard times (S12, shortened here), which the replay keeps by keeping the host's pauses."""
    path = tmp_path / "online.trace"
    host, _ = open_modem("ec2x", trace=str(path))
    with TlsServer(pki.server, mode="echo") as server:
        emulator.router.add_map(HOST, 8011, "127.0.0.1", server.port)
        assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1;S12=5') == b"\r\nOK\r\n"
        host.write(f'AT+QSSLOPEN=1,1,4,"{HOST}",8011,2\r')
        host.read_until(b"CONNECT\r\n")
        host.write(b"hello\r\n")
        assert host.read_exactly(7) == b"hello\r\n"
        host.quiet_for(0.15)
        host.write(b"+++")
        host.read_until(b"\r\nOK\r\n")
        assert host.at("AT+QSSLCLOSE=4") == b"\r\nOK\r\n"
    emulator.run(lambda: None)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["data"] for r in records if r["kind"] == "sent"] == ["hello\r\n"]
    capsys.readouterr()
    assert replay_main([str(path)]) == 0, capsys.readouterr().out
    show_main([str(path), "--socket", "4"])
    assert "socket 4 sent 7 bytes" in capsys.readouterr().out


def test_an_ml302_session_with_echo_replays(open_modem, emulator, pki, tmp_path, capsys):
    """The ML302's forms, echo on, and the address its DNS showed (recorded with the trace)."""
    path = tmp_path / "ml302.trace"
    emulator.router.add_dns("www.iottest.work", "106.12.79.254")
    host, _ = open_modem("ml302", echo=True, trace=str(path))
    with TlsServer(pki.server, handler=reply_after(5, b"pong")) as server:
        emulator.router.add_map("www.iottest.work", 443, "127.0.0.1", server.port)
        for line in ('AT+CGDCONT=1,"IP","CMNET"', "AT+CGACT=1,1", 'AT+QSSLCFG="seclevel",0,0',
                     'AT+QSSLOPEN=0,0,"www.iottest.work",443,0'):
            assert host.at(line).endswith(b"OK\r\n")
        host.read_until(b"+QSSLOPEN: 0,0\r\n")
        host.write("AT+QSSLSEND=0\r")
        host.read_until(b"> ")
        host.write(b"ping!\x1a")
        host.read_until(b"SEND OK\r\n")
        host.read_until(b'+QSSLURC: "recv",1,0\r\n')
        assert b"+QSSLRECV: 106.12.79.254:443,TCP,4\r\npong" in host.at("AT+QSSLRECV=1,0,1460")
        host.at("AT+QSSLCLOSE=0")
        host.read_until(b"0,CLOSE OK\r\n")
    emulator.run(lambda: None)
    capsys.readouterr()
    assert replay_main([str(path)]) == 0, capsys.readouterr().out


def test_an_upload_in_an_at_log_and_a_terminal_capture_replay(tmp_path, capsys):
    log = tmp_path / "upload.log"          # the data after CONNECT goes as is (no CR)
    log.write_text('>> ATE0\n<< OK\n>> AT+QFUPL="UFS:a.txt",5\n<< CONNECT\n>> hello\n<< +QFUPL: 5,6b09\n<< OK\n')
    assert replay_main([str(log)]) == 0, capsys.readouterr().out
    capture = tmp_path / "miniterm.txt"   # echo on: the commands are the lines starting AT
    capture.write_text('AT\r\nOK\r\nAT+QSSLCFG="seclevel",1\r\n+QSSLCFG: "seclevel",1,0\r\n\r\nOK\r\n'
                       "ATI\r\nQuectel\r\nEC25\r\nRevision: EC25EFAR06A06M4G\r\n\r\nOK\r\n")
    assert replay_main([str(capture)]) == 0, capsys.readouterr().out


def test_the_cli_replays_with_shortened_pauses(tmp_path):
    log = tmp_path / "host.log"
    log.write_text(">> ATE0\n<< OK\n>> AT+CMEE=2\n<< OK\n")
    trace = tmp_path / "t.trace"
    lines = [{"t": 0.0, "modem": 0, "kind": "start", "profile": "ec2x", "in": 0, "out": 0},
             {"t": 0.1, "modem": 0, "kind": "io", "dir": "in", "data": "ATE0\r", "in": 5, "out": 0},
             {"t": 0.1, "modem": 0, "kind": "io", "dir": "out", "data": "ATE0\r\r\nOK\r\n", "in": 5, "out": 11},
             {"t": 0.1, "modem": 0, "kind": "cmd", "line": "ATE0", "answer": "\r\nOK\r\n", "done": True,
              "in": 5, "out": 11},
             {"t": 60.0, "modem": 0, "kind": "io", "dir": "in", "data": "AT\r", "in": 8, "out": 11},
             {"t": 60.0, "modem": 0, "kind": "io", "dir": "out", "data": "\r\nOK\r\n", "in": 8, "out": 17},
             {"t": 60.0, "modem": 0, "kind": "cmd", "line": "AT", "answer": "\r\nOK\r\n", "done": True,
              "in": 8, "out": 17}]
    trace.write_text("".join(json.dumps(r) + "\n" for r in lines))
    for argv in (["replay", str(log)], ["replay", str(trace), "--max-gap", "0.05"]):
        done = subprocess.run([sys.executable, "-m", "emulator", *argv], capture_output=True, text=True, timeout=10)
        assert done.returncode == 0 and "no difference" in done.stdout, (argv, done.stdout, done.stderr)


# -- plain TCP/UDP sockets (AT+QIOPEN) -------------------------------------------------------
def traced_tcpip_session(open_modem, emulator, path) -> None:
    """An EC2x's TCP client (buffer mode), UDP client (direct push) and TCP LISTENER with one
    client that sends, is answered and hangs up; an open nothing listens for (566)."""
    import socket

    from emulator.testing.peers import TcpServer, UdpEchoServer
    from emulator.sockets.tcpip import tcpip_service

    host, port = open_modem("ec2x", trace=str(path))
    emulator.router.add_listen(2020, "127.0.0.1", 0)         # any free port for the module's 2020
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))                            # bound, not listening: refused
    with TcpServer("echo") as tcp, UdpEchoServer() as udp, closed:
        emulator.router.add_map("tcp.example", 7000, "127.0.0.1", tcp.port)
        emulator.router.add_map("udp.example", 7001, "127.0.0.1", udp.port)
        emulator.router.add_map("10.9.8.7", 7002, "127.0.0.1", closed.getsockname()[1])
        assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
        assert host.at('AT+QIOPEN=1,0,"TCP","tcp.example",7000,0,0') == b"\r\nOK\r\n"
        host.read_until(b"\r\n+QIOPEN: 0,0\r\n")
        host.write("AT+QISEND=0,5\r")
        host.read_until(b"> ")
        host.write(b"hello")
        host.read_until(b"\r\nSEND OK\r\n")
        host.read_until(b'\r\n+QIURC: "recv",0\r\n')
        assert host.at("AT+QIRD=0,1500") == b"\r\n+QIRD: 5\r\nhello\r\n\r\nOK\r\n"
        assert host.at('AT+QIOPEN=1,1,"UDP","udp.example",7001,0,1') == b"\r\nOK\r\n"
        host.read_until(b"\r\n+QIOPEN: 1,0\r\n")
        for datagram in (b"ping", b"pong!"):
            host.write(f"AT+QISEND=1,{len(datagram)}\r")
            host.read_until(b"> ")
            host.write(datagram)
            host.read_until(b"\r\nSEND OK\r\n")
            host.read_until(f'\r\n+QIURC: "recv",1,{len(datagram)}\r\n'.encode() + datagram + b"\r\n")
        assert host.at('AT+QIOPEN=1,2,"TCP LISTENER","127.0.0.1",0,2020,0') == b"\r\nOK\r\n"
        host.read_until(b"\r\n+QIOPEN: 2,0\r\n")
        listener = emulator.run(lambda: tcpip_service(port.modem).listeners[2].server.sockets[0].getsockname())
        client = socket.create_connection(listener[:2])
        host.read_until(re.compile(rb'\+QIURC: "incoming",3,2,"127\.0\.0\.1",\d+\r\n'))
        client.sendall(b"from client")
        host.read_until(b'\r\n+QIURC: "recv",3\r\n')
        assert host.at("AT+QIRD=3,1500") == b"\r\n+QIRD: 11\r\nfrom client\r\n\r\nOK\r\n"
        host.write("AT+QISEND=3,6\r")
        host.read_until(b"> ")
        host.write(b"answer")
        host.read_until(b"\r\nSEND OK\r\n")
        assert client.recv(100) == b"answer"
        assert re.search(rb'\+QISTATE: 3,"TCP INCOMING","127\.0\.0\.1",\d+,2020,2,', host.at("AT+QISTATE"))
        client.close()
        host.read_until(b'\r\n+QIURC: "closed",3\r\n')
        assert host.at('AT+QIOPEN=1,4,"TCP","10.9.8.7",7002,0,0') == b"\r\nOK\r\n"
        host.read_until(b"\r\n+QIOPEN: 4,566\r\n")
        for connect_id in (3, 0, 1, 2):
            assert host.at(f"AT+QICLOSE={connect_id}") == b"\r\nOK\r\n"
    emulator.run(lambda: None)


def test_a_tcpip_session_is_traced_shown_and_replayed(open_modem, emulator, tmp_path, capsys):
    """AT+QIOPEN sockets replay: the stand-ins are a plain TCP server (no TLS, no header
    line), a UDP server answering each recorded datagram where the modem's came from, a
    client that connects to the replaying modem's TCP LISTENER when the recorded one did,
    and, for the refused open, a failure by its place among the opens when the recording's
    refusal came (566, not the 565 of a DNS failure; f4f7295, no route since)."""
    path = tmp_path / "tcpip.trace"
    traced_tcpip_session(open_modem, emulator, path)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    opens = [(r["socket"], r.get("service"), r.get("type")) for r in records if r["kind"] == "open"]
    assert opens == [(0, "tcpip", "TCP"), (1, "tcpip", "UDP"), (4, "tcpip", "TCP")]
    accepted = next(r for r in records if r["kind"] == "accepted")
    assert (accepted["socket"], accepted["type"], accepted["server"], accepted["local_port"]) == \
        (3, "TCP INCOMING", 2, 2020)
    capsys.readouterr()
    assert show_main([str(path)]) == 0
    text = capsys.readouterr().out
    for wanted in ("socket 0 open TCP tcp.example:7000", "socket 0 connected (TCP, no TLS)",
                   "socket 1 open UDP udp.example:7001", "socket 1 connected (UDP, no TLS)",
                   "socket 3 peer closed (FIN)", "socket 4 open result 566 (connect: "):
        assert wanted in text, (wanted, text)
    assert re.search(r"socket 3 accepted from 127\.0\.0\.1:\d+ by listener 2 \(local port 2020\)", text), text
    assert "DTLS" not in text and "handshake" not in text
    assert replay_main([str(path)]) == 0, capsys.readouterr().out
    assert "no difference" in capsys.readouterr().out


def test_a_changed_tcpip_exchange_is_named(open_modem, emulator, tmp_path, capsys):
    """What the modem sends is checked against the recording on each kind of socket: a
    changed datagram, a changed stream, a changed answer to the listener's client."""
    path = tmp_path / "tcpip.trace"
    traced_tcpip_session(open_modem, emulator, path)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    capsys.readouterr()

    def replay_changed(socket_id: int, old: str, new: str) -> str:
        changed = tmp_path / f"changed-{socket_id}.trace"
        rows = []
        for r in records:
            if r["kind"] == "sent" and r["socket"] == socket_id and r["data"] == old:
                r = {**r, "data": new}
            rows.append(json.dumps(r))
        changed.write_text("\n".join(rows) + "\n")
        assert replay_main([str(changed), "--max-gap", "0.2"]) == 1
        return capsys.readouterr().out
    assert "socket 1 sent the datagram 'pong!', recorded 'pang!'" in replay_changed(1, "pong!", "pang!")
    assert "socket 0 sent 'hello', recorded 'jello'" in replay_changed(0, "hello", "jello")
    assert "socket 3 sent 'answer', recorded 'Answer'" in replay_changed(3, "answer", "Answer")


def test_tcp_push_and_transparent_sessions_replay(open_modem, emulator, tmp_path, capsys):
    """A TCP client in direct push mode and one in transparent mode (CONNECT, "+++" with
    its guard times); and a trace written before the open records said
    "service" (the sockets are told apart by their TCP/UDP "handshake" and the AT+QIOPEN
    line) replays the same."""
    from emulator.testing.peers import TcpServer

    path = tmp_path / "modes.trace"
    host, _ = open_modem("ec2x", trace=str(path))
    with TcpServer("echo") as echo, TcpServer("echo") as other:
        emulator.router.add_map("tcp.example", 7000, "127.0.0.1", echo.port)
        emulator.router.add_map("10.1.2.3", 7003, "127.0.0.1", other.port)
        assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1;S12=5') == b"\r\nOK\r\n"
        assert host.at('AT+QIOPEN=1,0,"TCP","tcp.example",7000,0,1') == b"\r\nOK\r\n"
        host.read_until(b"\r\n+QIOPEN: 0,0\r\n")
        host.write("AT+QISEND=0,4\r")
        host.read_until(b"> ")
        host.write(b"push")
        host.read_until(b"\r\nSEND OK\r\n")
        host.read_until(b'\r\n+QIURC: "recv",0,4\r\npush\r\n')
        host.write('AT+QIOPEN=1,1,"TCP","10.1.2.3",7003,0,2\r')
        host.read_until(b"\r\nCONNECT\r\n")
        host.write(b"online\r\n")
        assert host.read_exactly(8) == b"online\r\n"
        host.quiet_for(0.15)
        host.write(b"+++")
        host.read_until(b"\r\nOK\r\n")
        assert host.at("AT+QICLOSE=1") == b"\r\nOK\r\n"
        assert host.at("AT+QICLOSE=0") == b"\r\nOK\r\n"
    emulator.run(lambda: None)
    capsys.readouterr()
    assert replay_main([str(path)]) == 0, capsys.readouterr().out
    old = tmp_path / "old.trace"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    old.write_text("".join(json.dumps({k: v for k, v in r.items() if k not in ("service", "type")}) + "\n"
                           for r in rows))
    assert replay_main([str(old)]) == 0, capsys.readouterr().out


def test_a_dtls_session_is_traced_and_replays(open_modem, emulator, pki, tmp_path, capsys):
    """A DTLS socket replays over UDP: the stand-in answers the modem's first datagram with
    the recorded handshake's end, then each record is one datagram as recorded.  (The
    server's end of a DTLS session: tests/unit/test_replay_dtls.py -- s_server sends no
    close_notify over DTLS.)"""
    path = tmp_path / "dtls.trace"
    host, _ = open_modem("ec2x", trace=str(path))
    cert, key = pki.server.load_args
    with OpenSslServer(["-cert", cert, "-key", key, "-dtls1_2"]) as server:
        emulator.router.add_map(HOST, 5684, "127.0.0.1", server.port)
        assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
        assert host.at('AT+QSSLCFG="dtls",3,1') == b"\r\nOK\r\n"
        assert host.at(f'AT+QSSLOPEN=1,3,2,"{HOST}",5684,0') == b"\r\nOK\r\n"
        host.read_until(b"\r\n+QSSLOPEN: 2,0\r\n")
        server.wait_for_output(rb"CIPHER is")
        for up, down in ((b"coap up 1\n", b"coap down 1\n"), (b"coap up 2\n", b"coap down 2\n")):
            assert host.send_data(2, up) == b"\r\nSEND OK\r\n"
            server.wait_for_output(re.escape(up))
            server.write(down)
            host.read_until(b'\r\n+QSSLURC: "recv",2\r\n')
            assert host.at("AT+QSSLRECV=2,1500") == b"\r\n+QSSLRECV: %d\r\n%s\r\n\r\nOK\r\n" % (len(down), down)
        assert host.at("AT+QSSLCLOSE=2") == b"\r\nOK\r\n"
    emulator.run(lambda: None)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    opened = next(r for r in records if r["kind"] == "open")
    assert opened["dtls"] is True
    assert next(r for r in records if r["kind"] == "handshake")["version"] == "DTLSv1.2"
    capsys.readouterr()
    assert replay_main([str(path)]) == 0, capsys.readouterr().out
    assert "no difference" in capsys.readouterr().out
    # The modem's second datagram recorded otherwise: the stand-in names it.
    sent = [r for r in records if r["kind"] == "sent"]
    assert [r["data"] for r in sent] == ["coap up 1\n", "coap up 2\n"]
    sent[1]["data"] = "coap UP 2\n"
    changed = tmp_path / "changed.trace"
    changed.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert replay_main([str(changed)]) == 1
    assert "socket 2 sent the datagram 'coap up 2\\\\n', recorded 'coap UP 2\\\\n'" in capsys.readouterr().out


# -- what the modem held before the trace began ---------------------------------------------
def test_a_provisioned_ec2x_replays_with_placeholders_of_its_files(open_modem, emulator, pki, tmp_path, capsys):
    """Certificates uploaded before the trace began (the factory, an earlier session, --demo)
    are not in the host's bytes: the start record lists their names and sizes (not their
    bytes), and replay puts placeholders there, so the open finds its CA and AT+QFLST
    answers the same.  Before, the replaying modem had no such file: 552, exit 1."""
    state = tmp_path / "state"
    first, _ = open_modem("ec2x", state_dir=state)                     # the factory's session
    assert first.upload("UFS:ca.pem", pki.ca.cert_pem).startswith(b"\r\n+QFUPL: ")
    path = tmp_path / "field.trace"
    host, _ = open_modem("ec2x", state_dir=state, trace=str(path))     # the traced one
    with TlsServer(pki.server, handler=reply_after(4, b"pong")) as server:
        emulator.router.add_map(HOST, 8010, "127.0.0.1", server.port)
        listing = host.at("AT+QFLST")
        assert f'+QFLST: "ca.pem",{len(pki.ca.cert_pem)}'.encode() in listing
        assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
        assert host.at('AT+QSSLCFG="seclevel",1,1;+QSSLCFG="cacert",1,"UFS:ca.pem"') == b"\r\nOK\r\n"
        assert host.at(f'AT+QSSLOPEN=1,1,2,"{HOST}",8010,0') == b"\r\nOK\r\n"
        host.read_until(b"\r\n+QSSLOPEN: 2,0\r\n")
        assert host.send_data(2, b"ping") == b"\r\nSEND OK\r\n"
        host.read_until(b'\r\n+QSSLURC: "recv",2\r\n')
        assert host.at("AT+QSSLRECV=2,1500") == b"\r\n+QSSLRECV: 4\r\npong\r\n\r\nOK\r\n"
        assert host.at("AT+QSSLCLOSE=2") == b"\r\nOK\r\n"
    emulator.run(lambda: None)
    text = path.read_text()
    start = json.loads(text.splitlines()[0])
    assert start["material"] == {"files": {"ca.pem": len(pki.ca.cert_pem)}}
    assert "BEGIN CERTIFICATE" not in text                             # names and sizes only
    capsys.readouterr()
    assert replay_main([str(path), "--modem", "1"]) == 0, capsys.readouterr().out      # (the second modem)


def test_a_provisioned_ml302_replays_its_slots_with_their_checksums(open_modem, emulator, pki, tmp_path, capsys):
    state = tmp_path / "state"
    first, _ = open_modem("ml302", state_dir=state)
    first.write("AT+QSECWRITE=0\r")
    first.read_until(b"> ")
    first.write(pki.ca.cert_pem + b"\x1a")
    first.read_until(b"OK\r\n")
    path = tmp_path / "ml302.trace"
    emulator.router.add_dns("www.iottest.work", "106.12.79.254")
    host, _ = open_modem("ml302", state_dir=state, trace=str(path))
    with TlsServer(pki.server, handler=reply_after(4, b"pong")) as server:
        emulator.router.add_map("www.iottest.work", 443, "127.0.0.1", server.port)
        secread = host.at("AT+QSECREAD=0")
        assert secread.startswith(b"\r\n+QSECREAD: 1,") and secread.endswith(b"OK\r\n")
        assert host.at("AT+QSECWRITE=0") == b"\r\n+CME ERROR: 3\r\n"      # filled: as recorded
        for line in ('AT+CGDCONT=1,"IP","CMNET"', "AT+CGACT=1,1", 'AT+QSSLCFG="seclevel",0,1',
                     'AT+QSSLOPEN=0,0,"www.iottest.work",443,0'):
            assert host.at(line).endswith(b"OK\r\n")
        assert host.read_until(b"+QSSLOPEN: 0,", timeout=5).endswith(b"+QSSLOPEN: 0,")
        assert host.read_until(b"\r\n") == b"0\r\n"
        host.at("AT+QSSLCLOSE=0")
        host.read_until(b"0,CLOSE OK\r\n")
    emulator.run(lambda: None)
    start = json.loads(path.read_text().splitlines()[0])
    assert list(start["material"]["slots"]) == ["0"]
    assert start["material"]["slots"]["0"][0] == len(pki.ca.cert_pem)
    capsys.readouterr()
    assert replay_main([str(path), "--modem", "1"]) == 0, capsys.readouterr().out


def test_a_start_record_with_damaged_material_is_refused(tmp_path, capsys):
    path = tmp_path / "bad.trace"
    path.write_text(json.dumps({"t": 0, "modem": 0, "kind": "start", "profile": "ec2x",
                                "material": {"files": {"ca.pem": -1}}}) + "\n")
    assert replay_main([str(path)]) == 2
    assert "material" in capsys.readouterr().err


@pytest.mark.parametrize("argv, code", [(["trace", "--help"], 0), (["trace", "-h"], 0),
                                        (["trace"], 2), (["trace", "bogus"], 2)])
def test_trace_without_a_subcommand_prints_the_usage_and_help_exits_0(capsys, argv, code):
    """`modem-emulator trace --help` asks for the usage: stdout, exit 0 (as `trace show --help`
    and `replay --help` do); no or an unknown subcommand is a usage error: stderr, exit 2.  The
    usage names every replay option (--max-gap too)."""
    from emulator.tools.cli import subcommand
    assert subcommand(argv) == code
    out, err = capsys.readouterr()
    usage = out if code == 0 else err
    assert (out if code else err) == ""
    assert usage.startswith("usage: modem-emulator trace show FILE")
    for option in ("--profile", "--modem", "--max-gap", "--ignore", "--scenario"):
        assert option in usage.splitlines()[1], option


def test_replay_stands_in_for_ping_times_and_the_ntp_server(open_modem, emulator, tmp_path, capsys):
    """A session that pinged a host with a --ping time (150 ms, not the default 20) and synced
    the clock with AT+QNTP from a server giving a fixed date replays with no difference: the
    replay's pinged host answers after the recorded time, and an SNTP stand-in answers the
    time the recorded server gave (the trace's `ntp` record keeps it), so +QNTP and the
    AT+CCLK? after it show the same."""
    import datetime

    from emulator.testing.peers.sntp import SntpServer
    path = tmp_path / "netutil.trace"
    emulator.router.add_dns("pinged.example", "106.12.79.254")
    emulator.router.add_ping("pinged.example", 150)
    with SntpServer(datetime.datetime(2019, 6, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)) as ntp:
        emulator.router.add_map("ntp.example", 123, "127.0.0.1", ntp.port)
        host, _ = open_modem("ec2x", trace=str(path))
        assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
        assert host.at('AT+QPING=1,"pinged.example",2,2') == b"\r\nOK\r\n"
        assert host.read_until(b"+QPING: 0,2,2,0,150,150,150\r\n", timeout=5).count(
            b'+QPING: 0,"106.12.79.254",32,150,255') == 2
        assert host.at('AT+QNTP=1,"ntp.example"') == b"\r\nOK\r\n"
        assert host.read_until(b"\r\n", timeout=5) == b"\r\n"
        assert re.fullmatch(rb'\+QNTP: 0,"2019/06/01,20:00:0\d\+32"\r\n',      # (UTC+8: +32 quarters)
                            host.read_until(b"\r\n", timeout=5))
        assert re.fullmatch(rb'\r\n\+CCLK: "19/06/01,20:00:\d\d\+32"\r\n\r\nOK\r\n', host.at("AT+CCLK?"))
        emulator.run(lambda: None)
    ntp_record = next(json.loads(line) for line in path.read_text().splitlines()
                      if json.loads(line)["kind"] == "ntp")
    assert ntp_record["code"] == 0 and abs(ntp_record["server_time"] - 1559390400) < 0.01
    capsys.readouterr()
    assert replay_main([str(path)]) == 0, capsys.readouterr().out
    assert "no difference" in capsys.readouterr().out


def test_replay_stops_at_the_first_command_that_differs(open_modem, emulator, tmp_path, capsys,
                                                         monkeypatch):
    """Once a command's answer differs, the rest of the host's side is not played (it would
    only wait, up to 10 s a chunk, for answers that are not coming): the lines after the
    differing one are never written to the replaying modem; the difference is reported."""
    import serial
    path = tmp_path / "short.trace"
    host, _ = open_modem("ec2x", trace=str(path))
    for line in ("AT+CMEE=2", 'AT+QSSLCFG="seclevel",1,1', "AT+CSQ", "AT+CGMR", "AT+CGMM"):
        assert host.at(line).endswith(b"OK\r\n")
    emulator.run(lambda: None)
    lines = path.read_text().splitlines()
    for i, text in enumerate(lines):
        r = json.loads(text)
        if r["kind"] == "cmd" and r["line"] == 'AT+QSSLCFG="seclevel",1,1':
            r["answer"] = "\r\nERROR\r\n"
            lines[i] = json.dumps(r)
    path.write_text("\n".join(lines) + "\n")
    written = bytearray()
    real_write = serial.Serial.write

    def spy(self, data):
        written.extend(data)
        return real_write(self, data)
    monkeypatch.setattr(serial.Serial, "write", spy)
    capsys.readouterr()
    assert replay_main([str(path)]) == 1
    out = capsys.readouterr().out
    assert "command 3 (AT+QSSLCFG=\\\"seclevel\\\",1,1)" in out or 'AT+QSSLCFG="seclevel",1,1' in out, out
    assert b'AT+QSSLCFG="seclevel",1,1\r' in written
    assert b"AT+CGMR" not in written and b"AT+CGMM" not in written


def test_trace_show_renders_an_ssl_sockets_tcp_connect(tmp_path, capsys):
    """The "connected" record (an SSL socket's TCP connect, before its handshake) has its own
    line in `trace show`, not the raw JSON of an unknown kind."""
    from emulator.tools.trace import show_main
    path = tmp_path / "connected.trace"
    records = [{"t": 0.0, "modem": 0, "kind": "start", "profile": "ec2x", "name": "m", "wall": "w"},
               {"t": 0.1, "modem": 0, "kind": "open", "socket": 2, "host": "h.example", "port": 443, "dtls": False},
               {"t": 0.6, "modem": 0, "kind": "connected", "socket": 2, "in": 40, "out": 6}]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert show_main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "socket 2 TCP connected (the handshake follows)" in out and '"in"' not in out, out


def test_trace_show_of_a_modem_the_trace_does_not_have_is_an_error(tmp_path, capsys):
    """`trace show --modem N` for a modem the trace lacks says so (exit 2), as `replay --modem
    N` does; one the trace has shows its records (exit 0)."""
    from emulator.tools.trace import show_main
    path = tmp_path / "t.trace"
    path.write_text(json.dumps({"t": 0.0, "modem": 0, "kind": "start", "profile": "ec2x", "in": 0,
                                "out": 0}) + "\n")
    capsys.readouterr()
    assert show_main([str(path), "--modem", "5"]) == 2
    assert f"{path}: no modem 5 in the trace (it has: 0)" in capsys.readouterr().err
    assert show_main([str(path), "--modem", "0"]) == 0
    assert " start ec2x " in capsys.readouterr().out


def test_each_recorded_read_is_replayed_as_one_read_on_a_lagging_modem(open_modem, emulator, tmp_path, capsys,
                                                                       monkeypatch):
    """A host's line recorded as three reads ("AT", "E0", CR), then a byte-by-byte CR LF line
    whose LF came alone.  Replayed with --max-gap 0 on a modem whose every wake-up lags 40 ms
    (a loaded machine), the replaying modem still reads them apart as recorded: the replay
    writes a chunk only once the modem has read the one before.  (Written at once, the lagging
    modem read them joined, and a joined late LF is data where the recorded one was the line's:
    a replay under load differed -- chaos_host_2 in a full run.)"""
    from emulator.io import transport
    from emulator.tools import trace as trace_mod
    path = tmp_path / "reads.trace"
    host, _ = open_modem("ec2x", trace=str(path))
    for piece in (b"AT", b"E0", b"\r"):
        host.write(piece)
        time.sleep(0.03)
    assert host.read_until(b"OK\r\n") == b"\r\nOK\r\n"
    for piece in (b"AT+CSQ\r", b"\n"):
        host.write(piece)
        time.sleep(0.03)
    assert host.read_until(b"OK\r\n") == b"\r\n+CSQ: 24,99\r\n\r\nOK\r\n"
    emulator.run(lambda: None)
    recorded = [r["data"] for r in (json.loads(line) for line in path.read_text().splitlines())
                if r["kind"] == "io" and r["dir"] == "in"]
    assert recorded[-5:] == ["AT", "E0", "\r", "AT+CSQ\r", "\n"], recorded    # (after the fixture's ATE0)
    reads = []
    real_readable, real_bytes = transport.PtyPort._readable, trace_mod.ModemTrace.host_bytes

    def lagging(self):
        # after each read the pty is left unread for 40 ms (the loop itself stays free)
        real_readable(self)
        if self.attached and self.reading and not self._closed:
            self.loop.remove_reader(self.master)

            def back() -> None:
                if self.attached and self.reading and not self._closed:
                    self.loop.add_reader(self.master, self._readable)
            self.loop.call_later(0.04, back)

    def counted(self, data):
        reads.append(bytes(data).decode("latin-1"))
        return real_bytes(self, data)
    monkeypatch.setattr(transport.PtyPort, "_readable", lagging)
    monkeypatch.setattr(trace_mod.ModemTrace, "host_bytes", counted)
    capsys.readouterr()
    assert replay_main([str(path), "--max-gap", "0"]) == 0, capsys.readouterr().out
    assert reads == recorded
