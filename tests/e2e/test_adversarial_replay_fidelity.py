"""Adversarial: replay fidelity (emulator/tools/trace.py) for sessions the earlier replay tests
(test_trace.py, test_adversarial_replay_sessions.py, test_adversarial_blind_spots.py,
tests/unit/test_replay_dtls.py, test_adversarial_field_tools_fuzz.py) did not record.  The
promise under test: a trace recorded from any real session replays (`replay_main([path]) == 0`),
and a deliberately changed one is named as a difference.

Replayed with no difference (and, where cheap, one recorded byte changed -> exit 1 naming it):
* Transparent SSL, left with "+++" and re-entered with ATO three times, an AT+QSSLSEND on the
  parked connection each time (its echo waits for ATO), on manual time.
* One TCP socket switched by AT+QISWTMD buffer -> push -> transparent -> "+++" -> buffer ->
  ATO back online, on manual time (transwaittm and guard times by advance()).
* A TCP LISTENER with two incoming clients whose data interleave.
* AT+QFUPL with "+++" inside the data (no guard times: data) and an upload ended early by a
  guarded "+++", on manual time.
* The ML302: AT+QSECWRITE of the CA, Ctrl+Z sends, `+QSSLURC: "recv",1,<ssid>`, partial
  reads, the server's close_notify (`"close",<ssid>`), AT+QSSLSTATE, `CLOSE OK`.
* A host writing every byte separately with CR LF and echo on: upload, a push-mode SSL socket
  whose payloads look like answers and prompts.
* Servers that send their last data and close at once, in buffer, push and transparent mode.
* Control-socket drops (rst on an SSL push socket, close on a TCP socket) replayed with no
  --scenario: they are recorded as the peer's close.

Bugs found, fixed (comments on the tests say how):
* the handshake's end is replayed at once: a host that polls AT+QSSLSTATE while a (slow)
  server's handshake is in progress differs;
* output that a modem timer writes more than 1 s after the host's last byte (an AT+QFUPL
  inactivity timeout at the end of a manual-time trace) is not waited for;
* the stand-in server does not wait for a recorded hang-up: data that reached a parked
  transparent connection while nobody held the port are replayed to the first host, online;
* two sockets' data arriving while the host is at a prompt come back in a random order;
* a destination refused once and connected later: the refused open connects in the replay.

TLS peers are OpenSSL (Python ssl: TlsServer, or ssl.SSLContext in a thread).  No timing
assertions; manual time where guard times and timeouts matter.
"""
from __future__ import annotations

import queue
import re
import socket
import ssl
import threading
import time

from emulator.testing.host import Host
from emulator.testing.peers import TcpServer, TlsServer
from tests.e2e import replay_support as rs

OK = b"\r\nOK\r\n"
HOST = "www.iottest.work"           # a name the shared PKI's server certificate carries
ATTACH = 'AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1'


# -- helpers -------------------------------------------------------------------------------------
class GatedTlsServer:
    """OpenSSL (Python ssl) in a thread: accepts, then holds the ClientHello until `go` is
    set (a slow server, a long path), then completes the handshake and echoes until the
    client closes."""

    def __init__(self, cert) -> None:
        self.go = threading.Event()
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert.configure_cert(self.ctx)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        try:
            raw, _ = self.listener.accept()
        except OSError:
            return
        self.go.wait(10)
        rs.tls_echo(self.ctx, raw)

    def close(self) -> None:
        self.go.set()
        self.listener.close()


# -- replayed with no difference -----------------------------------------------------------------
def test_transparent_ato_reentered_three_times_with_sends_while_parked_replays(
        open_modem, emulator, pki, tmp_path, capsys):
    """Online (S12=5: 0.1 s guard), "+++", AT+QSSLSEND on the parked socket (its echo waits in
    the socket), AT+CSQ, ATO: CONNECT and the waiting echo first; three times, then closed.
    A changed byte of the server's echo while parked is named in the output."""
    path = tmp_path / "ato.trace"
    with TlsServer(pki.server, mode="echo") as server:
        emulator.router.add_map(HOST, 443, "127.0.0.1", server.port)
        host, port = open_modem("ec2x", trace=str(path), manual_time=True)
        advance = emulator.advancer(port, host)
        assert host.at(ATTACH + ";S12=5") == OK
        host.write(f'AT+QSSLOPEN=1,1,3,"{HOST}",443,2\r')
        assert host.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
        total = 0
        for n in range(3):
            online, parked = b"online %d\r\n" % n, b"away %d" % n
            host.write(online)
            assert host.read_exactly(len(online)) == online
            advance(0.3)
            host.write(b"+++")
            advance(0.3)
            assert host.read_until(b"OK\r\n") == OK
            assert host.send_data(3, parked) == b"\r\nSEND OK\r\n"
            total += len(online) + len(parked)
            server.wait_received(total)
            assert host.at("AT+CSQ").endswith(OK)
            host.write("ATO\r")
            assert host.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
            assert host.read_exactly(len(parked)) == parked
        advance(0.3)
        host.write(b"+++")
        advance(0.3)
        assert host.read_until(b"OK\r\n") == OK
        assert host.at("AT+QSSLCLOSE=3") == OK
        emulator.stop()
    code, out = rs.replay(capsys, path)
    assert code == 0 and "no difference" in out, out
    changed = rs.changed(tmp_path, path,
                       lambda r: r["kind"] == "received" and r["data"] == "away 1",
                       lambda r: {**r, "data": "AWAY 1"})
    code, out = rs.replay(capsys, changed)
    assert code == 1 and "the output differs" in out, out
    assert "away 1" in out.split("expected:")[1].split("got:")[0] and "AWAY 1" in out.split("got:")[1], out


def test_qiswtmd_switching_one_tcp_socket_through_every_mode_replays(open_modem, emulator, tmp_path, capsys):
    """Buffer ("recv" URC), AT+QISWTMD=0,1 (the waiting data pushed at once), a pushed echo,
    AT+QISWTMD=0,2 (CONNECT), online data (transwaittm on the modem's clock), "+++",
    AT+QISWTMD=0,0, a buffered echo read in part, ATO back online with the rest first."""
    path = tmp_path / "swtmd.trace"
    # (the escapes' silences are 0.5 s against a 0.1 s guard time: the replay keeps them on
    # the wall clock, where a loaded machine's ATO may take tens of ms to answer)
    with TcpServer("echo") as server:
        emulator.router.add_map("tcp.example", 7000, "127.0.0.1", server.port)
        host, port = open_modem("ec2x", trace=str(path), manual_time=True)
        advance = emulator.advancer(port, host)
        assert host.at(ATTACH + ";S12=5") == OK
        assert host.at('AT+QIOPEN=1,0,"TCP","tcp.example",7000,0,0') == OK
        assert host.read_until(b"+QIOPEN: 0,0\r\n") == b"\r\n+QIOPEN: 0,0\r\n"
        rs.qisend(host, 0, b"buf1")
        assert host.read_until(b'"recv",0\r\n') == b'\r\n+QIURC: "recv",0\r\n'
        assert host.at("AT+QISWTMD=0,1") == OK
        assert host.read_until(b"buf1\r\n") == b'\r\n+QIURC: "recv",0,4\r\nbuf1\r\n'     # pushed at once
        rs.qisend(host, 0, b"push1")
        assert host.read_until(b"push1\r\n") == b'\r\n+QIURC: "recv",0,5\r\npush1\r\n'
        host.write("AT+QISWTMD=0,2\r")
        assert host.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
        host.write(b"trans1")
        advance(0.25)                                     # transwaittm 2: 200 ms
        assert host.read_exactly(6) == b"trans1"
        advance(0.5)
        host.write(b"+++")
        advance(0.5)
        assert host.read_until(b"OK\r\n") == OK
        assert host.at("AT+QISWTMD=0,0") == OK
        rs.qisend(host, 0, b"buf2")
        assert host.read_until(b'"recv",0\r\n') == b'\r\n+QIURC: "recv",0\r\n'
        assert host.at("AT+QIRD=0,3") == b"\r\n+QIRD: 3\r\nbuf\r\n\r\nOK\r\n"
        host.write("ATO\r")
        assert host.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
        assert host.read_exactly(1) == b"2"
        advance(0.5)
        host.write(b"+++")
        advance(0.5)
        assert host.read_until(b"OK\r\n") == OK
        assert host.at("AT+QICLOSE=0") == OK
        emulator.stop()
    code, out = rs.replay(capsys, path)
    assert code == 0 and "no difference" in out, out
    changed = rs.changed(tmp_path, path,
                       lambda r: r["kind"] == "received" and r["data"] == "push1",
                       lambda r: {**r, "data": "PUSH1"})
    code, out = rs.replay(capsys, changed)
    assert code == 1 and "PUSH1" in out.split("got:")[1], out


def test_a_listener_with_two_clients_whose_data_interleave_replays(open_modem, emulator, tmp_path, capsys):
    """TCP LISTENER in push mode; client 1 comes, client 2 comes, client 2 speaks first, the
    host answers each, client 1 closes, then client 2.  A changed answer to a client is named."""
    from emulator.sockets.tcpip import tcpip_service
    path = tmp_path / "listener.trace"
    host, port = open_modem("ec2x", trace=str(path))
    emulator.router.add_listen(2020, "127.0.0.1", 0)
    assert host.at(ATTACH) == OK
    assert host.at('AT+QIOPEN=1,1,"TCP LISTENER","127.0.0.1",0,2020,1') == OK
    assert host.read_until(b"+QIOPEN: 1,0\r\n") == b"\r\n+QIOPEN: 1,0\r\n"
    addr = emulator.run(lambda: tcpip_service(port.modem).listeners[1].server.sockets[0].getsockname())
    incoming = re.compile(rb'\+QIURC: "incoming",(\d+),1,"127\.0\.0\.1",\d+\r\n')
    with socket.create_connection(addr[:2]) as c1:
        id1 = int(incoming.search(host.read_until(incoming)).group(1))
        c2 = socket.create_connection(addr[:2])
        id2 = int(incoming.search(host.read_until(incoming)).group(1))
        assert len({id1, id2, 1}) == 3
        for cid, client, text in ((id2, c2, b"two says"), (id1, c1, b"one says")):
            client.sendall(text)
            assert host.read_until(text + b"\r\n") == b'\r\n+QIURC: "recv",%d,8\r\n%s\r\n' % (cid, text)
            rs.qisend(host, cid, b"ack " + text[:3])
            assert client.recv(100) == b"ack " + text[:3]
        c1.shutdown(socket.SHUT_WR)
        assert host.read_until(b'"closed",%d\r\n' % id1) == b'\r\n+QIURC: "closed",%d\r\n' % id1
        c2.shutdown(socket.SHUT_WR)
        assert host.read_until(b'"closed",%d\r\n' % id2) == b'\r\n+QIURC: "closed",%d\r\n' % id2
        c2.close()
        for cid in (id1, id2, 1):
            assert host.at(f"AT+QICLOSE={cid}") == OK
    rs.flush(emulator)
    code, out = rs.replay(capsys, path)
    assert code == 0 and "no difference" in out, out
    changed = rs.changed(tmp_path, path,
                       lambda r: r["kind"] == "sent" and r["data"] == "ack one",
                       lambda r: {**r, "data": "ack ONE"})
    code, out = rs.replay(capsys, changed)
    assert code == 1 and f"socket {id1} sent 'ack one', recorded 'ack ONE'" in out, out


def test_uploads_with_plus_signs_as_data_and_an_early_escape_replay(open_modem, emulator, tmp_path, capsys):
    """"+++" with no guard times is data (the whole payload is the file); a "+++" guarded by
    silence ends an upload early (the bytes before it are the file); the next upload's data
    end with "+++" that completes its size (data).  AT+QFLST lists all three."""
    path = tmp_path / "qfupl.trace"
    host, port = open_modem("ec2x", trace=str(path), manual_time=True)
    advance = emulator.advancer(port, host)
    assert host.at("ATS12=5") == OK
    assert re.fullmatch(rb"\r\n\+QFUPL: 17,[0-9a-f]+\r\n\r\nOK\r\n", host.upload("UFS:a.txt", b"abc+++def+++\r\n+++"))
    host.write('AT+QFUPL="UFS:b.txt",50\r')
    assert host.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
    host.write(b"first+++")
    advance(0.3)
    host.write(b"+++")
    advance(0.3)
    assert re.fullmatch(rb"\r\n\+QFUPL: 8,[0-9a-f]+\r\n\r\nOK\r\n", host.read_until(b"OK\r\n"))
    assert host.upload("UFS:c.txt", b"xy+++").endswith(OK)
    assert host.at('AT+QFLST="*"') == (b'\r\n+QFLST: "a.txt",17\r\n+QFLST: "b.txt",8\r\n'
                                       b'+QFLST: "c.txt",5\r\n\r\nOK\r\n')
    emulator.stop()
    code, out = rs.replay(capsys, path)
    assert code == 0 and "no difference" in out, out
    changed = rs.changed(tmp_path, path,
                       lambda r: r["kind"] == "cmd" and r["line"] == 'AT+QFLST="*"',
                       lambda r: {**r, "answer": r["answer"].replace('"b.txt",8', '"b.txt",11')})
    code, out = rs.replay(capsys, changed)
    assert code == 1 and '(AT+QFLST="*")' in out and '"b.txt",8' in out.split("got:")[1], out


def test_an_ml302_session_with_its_secwrite_and_urc_forms_replays(open_modem, emulator, pki, tmp_path, capsys):
    """The CA written with AT+QSECWRITE (in the host's bytes: no placeholder), seclevel 1,
    Ctrl+Z sends, `+QSSLURC: "recv",1,2`, a 4-byte read then the rest, the server's last
    words and close_notify (`"close",2`), AT+QSSLSTATE, AT+QSSLCLOSE's `2,CLOSE OK`."""
    path = tmp_path / "ml302.trace"
    emulator.router.add_dns(HOST, "106.12.79.254")

    def handler(conn) -> None:
        conn.sendall(b"reply:" + conn.recv())
        conn.recv()
        conn.sendall(b"bye")
        conn.send_close_notify()

    with TlsServer(pki.server, handler=handler) as server:
        emulator.router.add_map(HOST, 443, "127.0.0.1", server.port)
        host, _ = open_modem("ml302", trace=str(path))
        assert host.at('AT+CGDCONT=1,"IP","CMNET"') == OK
        assert host.at("AT+CGACT=1,1").endswith(OK)
        assert host.at("AT+QSECDEL=0") == OK
        host.write("AT+QSECWRITE=0\r")
        assert host.read_until(b"> ") == b"\r\n> "
        host.write(pki.ca.cert_pem + b"\x1a")
        assert host.read_until(b"OK\r\n").endswith(OK)
        assert host.at('AT+QSSLCFG="seclevel",0,1') == OK
        assert host.at('AT+QSSLCFG="cacert",0,"/caCrt.pem"') == OK
        assert host.at(f'AT+QSSLOPEN=2,0,"{HOST}",443,0') == OK
        assert host.read_until(b"+QSSLOPEN: 2,0\r\n") == b"\r\n+QSSLOPEN: 2,0\r\n"
        for data in (b"ping", b"end"):
            host.write("AT+QSSLSEND=2\r")
            assert host.read_until(b"> ") == b"\r\n> "
            host.write(data + b"\x1a")
            assert host.read_until(b"SEND OK\r\n").endswith(b"SEND OK\r\n")
            if data == b"ping":
                assert host.read_until(b'"recv",1,2\r\n') == b'\r\n+QSSLURC: "recv",1,2\r\n'
                assert host.at("AT+QSSLRECV=1,2,4").endswith(b",TCP,4\r\nrepl\r\n\r\nOK\r\n")
                assert host.at("AT+QSSLRECV=1,2,1460").endswith(b",TCP,6\r\ny:ping\r\n\r\nOK\r\n")
        assert host.read_until(b'"close",2\r\n').endswith(b'+QSSLURC: "close",2\r\n')
        assert b'"REMOTE CLOSING"' in host.at("AT+QSSLSTATE")
        assert host.at("AT+QSSLRECV=1,2,1460").endswith(b",TCP,3\r\nbye\r\n\r\nOK\r\n")
        host.write("AT+QSSLCLOSE=2\r")
        assert host.read_until(b"CLOSE OK\r\n") == b"\r\nOK\r\n\r\n2,CLOSE OK\r\n"
        rs.flush(emulator)
    code, out = rs.replay(capsys, path)
    assert code == 0 and "no difference" in out, out
    changed = rs.changed(tmp_path, path,
                       lambda r: r["kind"] == "received" and r["data"] == "bye",
                       lambda r: {**r, "data": "BYE"})
    code, out = rs.replay(capsys, changed)
    assert code == 1 and "(AT+QSSLRECV=1,2,1460)" in out and "BYE" in out.split("got:")[1], out


def test_a_bytewise_crlf_host_with_echo_replays(open_modem, emulator, pki, tmp_path, capsys):
    """Echo on, every byte its own write, CR LF line ends: the CA uploaded, a push-mode SSL
    socket, a fixed-length send whose payload is an answer and a prompt, a variable-length
    one ending in Ctrl+Z that looks like "> " and "SEND OK"."""
    path = tmp_path / "bytewise.trace"
    with TlsServer(pki.server, mode="echo") as server:
        emulator.router.add_map(HOST, 443, "127.0.0.1", server.port)
        host, port = open_modem("ec2x", echo=True, trace=str(path))

        def bytewise(data: bytes, each_read: bool = True) -> None:
            for b in data:
                host.write(bytes([b]))
                if each_read:                        # the modem reads it alone
                    emulator.wait_received(port, host.written)

        bytewise(ATTACH.encode() + b"\r\n")
        assert host.read_until(b"OK\r\n").endswith(OK)
        bytewise(b'AT+QFUPL="UFS:ca.pem",%d\r\n' % len(pki.ca.cert_pem))
        host.read_until(b"CONNECT\r\n")
        bytewise(pki.ca.cert_pem, each_read=False)
        assert re.search(rb"\+QFUPL: %d,[0-9a-f]+\r\n\r\nOK\r\n$" % len(pki.ca.cert_pem), host.read_until(b"OK\r\n"))
        bytewise(b'AT+QSSLCFG="cacert",1,"UFS:ca.pem";+QSSLCFG="seclevel",1,1\r\n')
        assert host.read_until(b"OK\r\n").endswith(OK)
        bytewise(f'AT+QSSLOPEN=1,1,1,"{HOST}",443,1\r\n'.encode())
        host.read_until(b"+QSSLOPEN: 1,0\r\n")
        bytewise(b"AT+QSSLSEND=1,10\r\n")
        host.read_until(b"> ")
        bytewise(b"\r\nOK\r\n\r\n> ")
        host.read_until(b"SEND OK\r\n")
        host.read_until(b'+QSSLURC: "recv",1,10\r\n\r\nOK\r\n\r\n> \r\n')
        bytewise(b"AT+QSSLSEND=1\r\n")
        host.read_until(b"> ")
        bytewise(b"> \r\nSEND OK\x1a")
        host.read_until(b"\r\nSEND OK\r\n")
        host.read_until(b'+QSSLURC: "recv",1,11\r\n> \r\nSEND OK\r\n')
        bytewise(b"AT+QSSLCLOSE=1\r\n")
        assert host.read_until(b"OK\r\n").endswith(OK)
        rs.flush(emulator)
    lines = [r for r in rs.records(path) if r["kind"] == "io" and r["dir"] == "in" and r["data"] in "\r\n"]
    assert len(lines) >= 2 * 7                       # every CR and LF was read on its own
    code, out = rs.replay(capsys, path)
    assert code == 0 and "no difference" in out, out


def test_servers_that_send_their_last_words_and_close_at_once_replay_in_every_access_mode(
        open_modem, emulator, pki, tmp_path, capsys):
    """The server answers and sends close_notify + FIN right behind its data: buffer mode
    ("recv", "closed", the data still readable), push mode (the data URC, then "closed"),
    transparent (the data, NO CARRIER)."""
    path = tmp_path / "lastwords.trace"

    def handler(conn) -> None:
        conn.sendall(b"last words:" + conn.recv())
        conn.send_close_notify()

    with TlsServer(pki.server, handler=handler) as server:
        emulator.router.add_map(HOST, 443, "127.0.0.1", server.port)
        host, _ = open_modem("ec2x", trace=str(path))
        assert host.at(ATTACH) == OK
        for sid, mode in ((1, 0), (2, 1), (3, 2)):
            host.write(f'AT+QSSLOPEN=1,1,{sid},"{HOST}",443,{mode}\r')
            if mode == 2:
                assert host.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
                host.write(b"z")
                assert host.read_until(b"NO CARRIER\r\n") == b"last words:z\r\nNO CARRIER\r\n"
            else:
                assert host.read_until(b"+QSSLOPEN: %d,0\r\n" % sid).endswith(b"\r\n+QSSLOPEN: %d,0\r\n" % sid)
                assert host.send_data(sid, b"y") == b"\r\nSEND OK\r\n"
                urcs = host.read_until(b'"closed",%d\r\n' % sid)
                if mode == 0:
                    assert urcs == b'\r\n+QSSLURC: "recv",1\r\n\r\n+QSSLURC: "closed",1\r\n'
                    assert host.at("AT+QSSLRECV=1,100") == b"\r\n+QSSLRECV: 12\r\nlast words:y\r\n\r\nOK\r\n"
                else:
                    assert urcs == b'\r\n+QSSLURC: "recv",2,12\r\nlast words:y\r\n\r\n+QSSLURC: "closed",2\r\n'
            assert host.at(f"AT+QSSLCLOSE={sid}") == OK
        rs.flush(emulator)
    assert [r["how"] for r in rs.records(path) if r["kind"] == "peer_closed"] == ["close_notify"] * 3
    code, out = rs.replay(capsys, path)
    assert code == 0 and "no difference" in out, out


def test_control_drops_are_recorded_as_peer_closes_and_replay_without_a_scenario(
        open_modem, emulator, pki, tmp_path, capsys):
    """{"op": "drop", "how": "rst"} on a push-mode SSL socket and {"how": "close"} on a push-mode
    TCP socket: the trace has them as the peer's RST / close, so the stand-ins end the
    connections where they ended, with no --scenario."""
    path = tmp_path / "drops.trace"
    with TlsServer(pki.server, mode="echo") as tls, TcpServer("echo") as tcp:
        emulator.router.add_map(HOST, 443, "127.0.0.1", tls.port)
        emulator.router.add_map("tcp.example", 7000, "127.0.0.1", tcp.port)
        host, _ = open_modem("ec2x", trace=str(path))
        assert host.at(ATTACH) == OK
        assert host.at(f'AT+QSSLOPEN=1,1,1,"{HOST}",443,1') == OK
        host.read_until(b"+QSSLOPEN: 1,0\r\n")
        assert host.at('AT+QIOPEN=1,2,"TCP","tcp.example",7000,0,1') == OK
        host.read_until(b"+QIOPEN: 2,0\r\n")
        assert host.send_data(1, b"abc") == b"\r\nSEND OK\r\n"
        assert host.read_until(b"abc\r\n") == b'\r\n+QSSLURC: "recv",1,3\r\nabc\r\n'
        rs.qisend(host, 2, b"defg")
        assert host.read_until(b"defg\r\n") == b'\r\n+QIURC: "recv",2,4\r\ndefg\r\n'
        assert emulator.control("drop", socket=1, how="rst")["ok"]
        assert host.read_until(b'"closed",1\r\n') == b'\r\n+QSSLURC: "closed",1\r\n'
        assert host.send_data(1, b"late") == b"\r\nERROR\r\n"
        assert host.at("AT+QSSLCLOSE=1") == OK
        assert emulator.control("drop", socket=2, how="close")["ok"]
        assert host.read_until(b'"closed",2\r\n') == b'\r\n+QIURC: "closed",2\r\n'
        assert host.at("AT+QICLOSE=2") == OK
        rs.flush(emulator)
    closes = [(r["socket"], r["how"]) for r in rs.records(path) if r["kind"] == "peer_closed"]
    assert [sid for sid, _ in closes] == [1, 2] and closes[0][1] == "rst", closes
    code, out = rs.replay(capsys, path)
    assert code == 0 and "no difference" in out, out


# -- bugs ----------------------------------------------------------------------------------------
# Was a bug, fixed: replay gave the recorded handshake's end as soon as the modem connected, so an AT+QSSLSTATE
# the host sent during a slow server's handshake (state 1) answered state 2.  The stand-in's
# header now waits for the handshake record's moment (Script.head_at).
def test_a_host_polling_the_state_of_a_slow_handshake_replays(open_modem, emulator, pki, tmp_path, capsys):
    """A server that takes its time (here: until the host has asked AT+QSSLSTATE) -- any
    real network's round trips do the same."""
    path = tmp_path / "slow.trace"
    server = GatedTlsServer(pki.server)
    try:
        emulator.router.add_map(HOST, 443, "127.0.0.1", server.port)
        host, _ = open_modem("ec2x", trace=str(path))
        assert host.at(ATTACH) == OK
        assert host.at(f'AT+QSSLOPEN=1,1,1,"{HOST}",443,0') == OK
        assert re.fullmatch(rb'\r\n\+QSSLSTATE: 1,"SSLClient","%s",443,\d+,1,1,1,0,"usbmodem",1\r\n\r\nOK\r\n'
                            % HOST.encode(), host.at("AT+QSSLSTATE=1"))     # state 1: opening
        server.go.set()
        assert host.read_until(b"+QSSLOPEN: 1,0\r\n") == b"\r\n+QSSLOPEN: 1,0\r\n"
        assert host.send_data(1, b"hello") == b"\r\nSEND OK\r\n"
        host.read_until(b'"recv",1\r\n')
        assert host.at("AT+QSSLRECV=1,100") == b"\r\n+QSSLRECV: 5\r\nhello\r\n\r\nOK\r\n"
        assert host.at("AT+QSSLCLOSE=1") == OK
        rs.flush(emulator)
    finally:
        server.close()
    rs.replays(capsys, path)


# Was a bug, fixed: replay stopped reading output 1 s after the last, whatever the trace recorded after the
# host's last byte: an AT+QFUPL inactivity timeout ending the trace was never waited for.  The
# final wait now lasts as long as the recording's tail (_output_tail).
def test_a_manual_time_trace_ending_in_an_upload_timeout_replays(open_modem, emulator, tmp_path, capsys):
    path = tmp_path / "timeout.trace"
    host, port = open_modem("ec2x", trace=str(path), manual_time=True)
    advance = emulator.advancer(port, host)
    host.write('AT+QFUPL="UFS:part.bin",100,3\r')
    assert host.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
    host.write(b"0123456789")
    advance(3.5)
    assert host.read_until(b"OK\r\n") == b"\r\n+QFUPL: 10,3839\r\n\r\nOK\r\n"
    emulator.stop()
    rs.replays(capsys, path)


# Was a bug, fixed: a stand-in's 'received' step waited for byte counts only, which a hang-up does not move:
# data that reached a parked connection while nobody held the port went to the first host,
# online.  A step's moment counts the host's hang-ups too.
def test_data_that_reached_a_parked_connection_while_nobody_held_the_port_replay_after_ato(
        open_modem, emulator, pki, tmp_path, capsys):
    """Online; the host closes the device (the connection stays open, behaviour.md); the
    server speaks; the next host asks AT+QSSLSTATE, returns with ATO (CONNECT, the waiting
    data), leaves with "+++" and closes."""
    path = tmp_path / "parked.trace"
    go = threading.Event()

    def handler(conn) -> None:
        conn.sendall(conn.recv())
        go.wait(10)
        conn.sendall(b"while nobody held the port")
        while conn.recv():
            pass

    with TlsServer(pki.server, handler=handler) as server:
        emulator.router.add_map(HOST, 443, "127.0.0.1", server.port)
        host, port = open_modem("ec2x", trace=str(path))
        assert host.at(ATTACH + ";S12=5") == OK
        host.write(f'AT+QSSLOPEN=1,1,3,"{HOST}",443,2\r')
        assert host.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
        host.write(b"hi")
        assert host.read_exactly(2) == b"hi"
        time.sleep(0.3)                              # the host's own pace before it quits
        host.close()
        rs.wait_records(path, "hangup", 1)
        go.set()
        rs.wait_records(path, "received", 2)
        host2 = Host(port.path)
        try:
            assert host2.at("AT+QSSLSTATE=3").endswith(b',2,1,3,2,"usbmodem",1\r\n\r\nOK\r\n')
            host2.write("ATO\r")
            assert host2.read_until(b"port") == b"\r\nCONNECT\r\nwhile nobody held the port"
            time.sleep(0.2)
            host2.write(b"+++")
            assert host2.read_until(b"OK\r\n") == OK
            assert host2.at("AT+QSSLCLOSE=3") == OK
        finally:
            host2.close()
        rs.flush(emulator)
    rs.replays(capsys, path)


# Was a bug, fixed: two stand-ins whose 'received' steps had the same byte counts (data that came while the
# host sat at a '> ' prompt) sent in a random order.  A step's moment counts the plaintext the
# modem had received from every replayed server before it.
def test_two_servers_speaking_while_the_host_is_at_a_prompt_replay_in_the_recorded_order(
        open_modem, emulator, pki, tmp_path, capsys):
    """Sockets 1 and 2 in buffer mode; while the host sits at socket 1's "> " prompt, server B
    then server A send (A then B in the next round, and so on): after SEND OK the "recv" URCs
    come in the order the data came.  Ten rounds, so that a replay cannot get them all right
    by chance."""
    path = tmp_path / "order.trace"
    queues = {b"A": queue.Queue(), b"B": queue.Queue()}

    def speaker(tag: bytes):
        def handler(conn) -> None:
            while (n := queues[tag].get()) is not None:
                conn.sendall(b"%s%d" % (tag, n))
            while conn.recv():
                pass
        return handler

    with TlsServer(pki.server, handler=speaker(b"A")) as a, TlsServer(pki.server, handler=speaker(b"B")) as b:
        emulator.router.add_map("a.example", 443, "127.0.0.1", a.port)
        emulator.router.add_map("b.example", 443, "127.0.0.1", b.port)
        host, _ = open_modem("ec2x", trace=str(path))
        assert host.at(ATTACH) == OK
        for sid, name in ((1, "a"), (2, "b")):
            assert host.at(f'AT+QSSLCFG="seclevel",{sid},0') == OK
            assert host.at(f'AT+QSSLOPEN=1,{sid},{sid},"{name}.example",443,0') == OK
            host.read_until(b"+QSSLOPEN: %d,0\r\n" % sid)
        received = 0
        for n in range(10):
            host.write("AT+QSSLSEND=1,1\r")
            assert host.read_until(b"> ") == b"\r\n> "
            order = (b"A", b"B") if n % 2 else (b"B", b"A")
            for tag in order:
                queues[tag].put(n)
                received += 1
                rs.wait_records(path, "received", received)
            host.write(b"x")
            ids = [b"1" if tag == b"A" else b"2" for tag in order]
            assert host.read_until(b"SEND OK\r\n") == b"\r\nSEND OK\r\n"
            assert host.read_until(b'"recv",%s\r\n' % ids[1]) == \
                b'\r\n+QSSLURC: "recv",%s\r\n\r\n+QSSLURC: "recv",%s\r\n' % tuple(ids)
            for sid, tag in ((1, b"A"), (2, b"B")):
                assert host.at(f"AT+QSSLRECV={sid},10") == b"\r\n+QSSLRECV: 2\r\n%s%d\r\n\r\nOK\r\n" % (tag, n)
        for q in queues.values():
            q.put(None)
        assert host.at("AT+QSSLCLOSE=1") == OK
        assert host.at("AT+QSSLCLOSE=2") == OK
        rs.flush(emulator)
    rs.replays(capsys, path)


# Was a bug, fixed: a destination refused once and connected later was routed to its stand-in for both
# opens, so the refused one connected.  The replay modem refuses the opens the recording's
# server refused, by their place among the trace's opens (_ReplayFaults).
def test_a_refused_open_retried_once_the_server_is_up_replays(open_modem, emulator, pki, tmp_path, capsys):
    """Transparent mode: the first open is refused (ERROR, AT+QIGETERROR 566), the retry,
    once the server listens, answers CONNECT."""
    path = tmp_path / "retry.trace"
    with TlsServer(pki.server, mode="echo") as server, socket.socket() as down:
        down.bind(("127.0.0.1", 0))                              # bound, not listening: refused
        emulator.router.add_map(HOST, 443, "127.0.0.1", down.getsockname()[1])
        host, _ = open_modem("ec2x", trace=str(path))
        assert host.at(ATTACH + ";S12=5") == OK
        assert host.at(f'AT+QSSLOPEN=1,1,1,"{HOST}",443,2') == b"\r\nERROR\r\n"
        assert host.at("AT+QIGETERROR").startswith(b"\r\n+QIGETERROR: 566,")
        emulator.router.add_map(HOST, 443, "127.0.0.1", server.port)   # the server is up
        assert host.at(f'AT+QSSLOPEN=1,1,1,"{HOST}",443,2') == b"\r\nCONNECT\r\n"
        host.write(b"data")
        assert host.read_exactly(4) == b"data"
        time.sleep(0.2)
        host.write(b"+++")
        assert host.read_until(b"OK\r\n") == OK
        assert host.at("AT+QSSLCLOSE=1") == OK
        rs.flush(emulator)
    rs.replays(capsys, path)
