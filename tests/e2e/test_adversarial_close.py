"""The host's close (SocketService.close: the socket leaves the service in the command's
own turn, the returned coroutine lingers), attacked: two closes of one id, close and reopen
of the id in one line while the first lingers, a close delayed by a slow module while the
server still sends, listeners and UDP services, AT&D2, the host hanging up mid-linger, the
bearer lost and a reboot while a close lingers, a transparent open orphaned by a hang-up.
Checked: one answer per command, no URC about a closed id after its close's answer, the
id free again, the linger on modem time, no connection outliving its socket."""
from __future__ import annotations

import re
import socket
import threading
import time
from contextlib import contextmanager

import pytest

from emulator.testing.host import Host
from emulator.testing.peers.plain import TcpServer, wait_until
from tests.e2e.socket_support import TCP_HOST, TCP_PORT, free_port, qiopen, tcp_fds_to

SSL_HOST, SSL_PORT = "echo.example", 443          # the `echo` fixture's route
ANSWER = re.compile(rb"\r\n(OK|ERROR)\r\n")


@pytest.fixture
def modem(ec2x_strict):
    return ec2x_strict


def ssl_open(host, client_id: int, mode: int = 0, addr: str = SSL_HOST, port: int = SSL_PORT) -> None:
    assert host.at(f'AT+QSSLOPEN=1,1,{client_id},"{addr}",{port},{mode}') == b"\r\nOK\r\n"
    assert host.seen(re.compile(rb"\+QSSLOPEN: %d,-?\d+\r\n" % client_id), 5).endswith(
        b"+QSSLOPEN: %d,0\r\n" % client_id)


def svc_ids(emulator, port) -> tuple[set, set, set]:
    from emulator.sockets.service import ssl_service
    from emulator.sockets.tcpip import tcpip_service

    def check(modem):
        t = tcpip_service(modem)
        return set(ssl_service(modem).sockets), set(t.sockets), set(t.listeners)
    return emulator.run(check, port.modem)


def connecting(emulator, port) -> int:
    from emulator.sockets.service import ssl_service

    def check(modem):
        return len(getattr(ssl_service(modem).deliveries["online"], "_connecting", ()))
    return emulator.run(check, port.modem)


# -- two closes, close and reopen ----------------------------------------------------------
def test_ssl_close_twice_in_one_line_and_back_to_back_answers_ok_each_time(modem, emulator, echo):
    host, advance, port = modem
    ssl_open(host, 1)
    host.write("AT+QSSLCLOSE=1,0;+QSSLCLOSE=1,0\r\n")
    assert host.read_until(ANSWER, timeout=3) == b"\r\nOK\r\n"
    assert host.quiet_for(0.2) == b""
    assert host.at("AT+QSSLCLOSE=1") == b"\r\nOK\r\n"            # idle id: harmless
    assert host.at("AT+QSSLSTATE=1") == b"\r\nOK\r\n"
    assert svc_ids(emulator, port) == (set(), set(), set())


def test_qiclose_twice_in_one_line_second_finds_the_id_free(modem, emulator, tcp_echo):
    """AT+QICLOSE on an id with nothing open is OK (docs): the second close of the line sees
    the id already free, in the same turn, and answers OK with no error recorded."""
    host, advance, port = modem
    qiopen(host, 2)
    host.write("AT+QICLOSE=2,0;+QICLOSE=2,0\r\n")
    assert host.read_until(ANSWER, timeout=3) == b"\r\nOK\r\n"
    assert b"+QIGETERROR: 0,operate successfully" in host.at("AT+QIGETERROR")
    assert host.quiet_for(0.2) == b""
    assert svc_ids(emulator, port) == (set(), set(), set())


def test_close_lingering_then_reopen_same_id_in_the_same_line(modem, emulator, tcp_echo):
    """AT+QICLOSE=1,3;+QIOPEN=...,1,...: the close lingers its 3 s (the server never closes),
    then OK; the open on the same id then succeeds; the old linger's end does not touch it."""
    host, advance, port = modem
    with TcpServer("sink") as server:
        emulator.router.add_map("stay.example", 80, "127.0.0.1", server.port)
        qiopen(host, 1, addr="stay.example", port=80)
        host.write(f'AT+QICLOSE=1,3;+QIOPEN=1,1,"TCP","{TCP_HOST}",{TCP_PORT},0,0\r\n')
        advance(0)
        assert host.quiet_for(0.3) == b""                  # lingering; the open waits
        advance(2.5)
        assert host.quiet_for(0.2) == b""
        advance(0.6)
        assert host.read_until(b"\r\nOK\r\n", timeout=3) == b"\r\nOK\r\n"
        assert host.seen(b"+QIOPEN: 1,", 3) + host.read_until(b"\r\n") == b"+QIOPEN: 1,0\r\n"
        assert server.gone(0)                              # the old connection ended
        line = host.at("AT+QISTATE=1,1")
        assert re.search(rb'\+QISTATE: 1,"TCP","[^"]*",%d,\d+,2,' % TCP_PORT, line), line
        host.write("AT+QISEND=1,3\r\n")
        assert host.read_until(b"> ", timeout=3) == b"\r\n> "
        host.write(b"abc")
        assert host.read_until(re.compile(rb"SEND (OK|FAIL)\r\n"), timeout=3).endswith(b"SEND OK\r\n")
        assert host.seen(b'+QIURC: "recv",1\r\n', 3)
        advance(20)                                        # any timer the old socket left
        assert b"closed" not in host.quiet_for(0.3)
        assert svc_ids(emulator, port)[1] == {1}


@pytest.mark.parametrize("bytewise", [False, True])
def test_ssl_close_then_open_same_id_in_one_line(modem, emulator, echo, bytewise):
    host, advance, port = modem
    ssl_open(host, 3)
    line = f'AT+QSSLCLOSE=3;+QSSLOPEN=1,1,3,"{SSL_HOST}",{SSL_PORT},0\r\n'.encode()
    for chunk in ([bytes([b]) for b in line] if bytewise else [line]):
        host.write(chunk)
    assert host.read_until(ANSWER, timeout=5) == b"\r\nOK\r\n"
    assert host.seen(b"+QSSLOPEN: 3,", 5) + host.read_until(b"\r\n") == b"+QSSLOPEN: 3,0\r\n"
    assert re.search(rb'\+QSSLSTATE: 3,"SSLClient","echo.example",443,\d+,2,', host.at("AT+QSSLSTATE=3"))
    assert host.send_data(3, b"again") == b"\r\nSEND OK\r\n"
    assert host.seen(b'+QSSLURC: "recv",3\r\n', 3)
    assert b"closed" not in host.quiet_for(0.3)


# -- linger on modem time ------------------------------------------------------------------
def test_close_timeout_0_aborts_at_once_even_with_a_silent_server(modem, emulator):
    host, advance, port = modem
    with TcpServer("sink") as server:
        emulator.router.add_map("stay.example", 80, "127.0.0.1", server.port)
        qiopen(host, 4, addr="stay.example", port=80)
        assert host.at("AT+QICLOSE=4,0", timeout=3) == b"\r\nOK\r\n"
        assert server.gone(0)


def test_close_lingers_the_full_timeout_while_another_socket_has_a_prompt_open(modem, emulator, tcp_echo):
    """A close lingers; the host cannot enter a data prompt meanwhile (the port is busy:
    the QISEND waits), and the prompt comes after the close's OK."""
    host, advance, port = modem
    with TcpServer("sink") as server:
        emulator.router.add_map("stay.example", 80, "127.0.0.1", server.port)
        qiopen(host, 0, addr="stay.example", port=80)
        qiopen(host, 1)
        host.write("AT+QICLOSE=0,4\r\n")
        host.write("AT+QISEND=1,2\r\n")
        advance(0)
        assert host.quiet_for(0.3) == b""
        advance(3.9)
        assert host.quiet_for(0.2) == b""
        advance(0.2)
        assert host.read_until(b"> ", timeout=3) == b"\r\nOK\r\n\r\n> "
        host.write(b"hi")
        assert host.read_until(re.compile(rb"SEND (OK|FAIL)\r\n"), timeout=3).endswith(b"SEND OK\r\n")
        assert server.gone(0)


# -- the server sends while the close is answered late -------------------------------------
# Was a bug, fixed (older than ab97365): SocketService.on_data does not check that the socket is
# still the service's; a close answered late (control 'slow', timing.response_delay_ms) leaves
# the connection reading until the linger coroutine runs, and a 'recv' URC for the closed id
# follows the close's OK
def test_tcp_data_arriving_while_a_slow_close_waits_gives_no_urc_after_the_ok(modem, emulator):
    """The control API's "slow": the command's work is done now, its answer comes later.
    AT+QICLOSE takes the socket out at once, but its connection still reads until the
    (delayed) linger coroutine runs: data arriving meanwhile must not report
    '+QIURC: "recv",0' after the close's OK (the host would read from a free id)."""
    host, advance, port = modem
    with TcpServer("sink") as server:
        emulator.router.add_map("stay.example", 80, "127.0.0.1", server.port)
        qiopen(host, 0, addr="stay.example", port=80)
        wait_until(lambda: server.connections)
        assert emulator.control("slow", command="+QICLOSE", ms=1000)["ok"]
        host.write("AT+QICLOSE=0,0\r\n")
        advance(0)
        server.connections[0].sock.sendall(b"late data")
        time.sleep(0.3)
        advance(1.1)
        out = host.read_until(b"\r\nOK\r\n", timeout=3) + host.quiet_for(0.3)
        assert out == b"\r\nOK\r\n", out
        assert server.gone(0)


# Was a bug, fixed (older than ab97365): SocketService.on_data does not check that the socket is
# still the service's; a close answered late (control 'slow', timing.response_delay_ms) leaves
# the connection reading until the linger coroutine runs, and a 'recv' URC for the closed id
# follows the close's OK
@pytest.mark.parametrize("profile", ["ec2x", "ml302"])
def test_ssl_data_arriving_while_a_slow_close_waits_gives_no_urc_after_the_ok(
        emulator, open_modem, echo, profile):
    host, port = open_modem(profile)
    if profile == "ec2x":
        assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
        ssl_open(host, 1)
        close, answer = "AT+QSSLCLOSE=1,0\r\n", b"\r\nOK\r\n"
    else:
        assert host.at('AT+CGDCONT=1,"IP","CMNET"') == b"\r\nOK\r\n"
        assert host.at("AT+CGACT=1,1").endswith(b"OK\r\n")
        assert host.at(f'AT+QSSLOPEN=1,0,"{SSL_HOST}",{SSL_PORT},0') == b"\r\nOK\r\n"
        assert host.seen(b"+QSSLOPEN: 1,0\r\n", 5)
        close, answer = "AT+QSSLCLOSE=1\r\n", b"\r\nOK\r\n\r\n1,CLOSE OK\r\n"
    wait_until(lambda: echo.connections)
    assert emulator.control("slow", command="+QSSLCLOSE", ms=800)["ok"]
    host.write(close)
    time.sleep(0.1)
    echo.connections[-1].send(b"late data")
    out = host.read_until(answer, timeout=3) + host.quiet_for(0.4)
    assert out == answer, out


# -- listeners, UDP SERVICE ----------------------------------------------------------------
def test_close_listener_keeps_its_incoming_socket_and_stops_accepting(modem, emulator):
    host, advance, port = modem
    lport = free_port()
    assert host.at(f'AT+QIOPEN=1,0,"TCP LISTENER","127.0.0.1",0,{lport},0') == b"\r\nOK\r\n"
    assert host.seen(b"+QIOPEN: 0,0\r\n", 3)
    client = socket.create_connection(("127.0.0.1", lport), timeout=3)
    try:
        urc = host.seen(re.compile(rb'\+QIURC: "incoming",(\d+),0,"127\.0\.0\.1",\d+\r\n'), 3)
        inc = int(re.search(rb'"incoming",(\d+)', urc).group(1))
        assert host.at("AT+QICLOSE=0") == b"\r\nOK\r\n"
        assert host.quiet_for(0.2) == b""
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", lport), timeout=1).close()
        assert svc_ids(emulator, port) == (set(), {inc}, set())
        client.sendall(b"ping")
        assert host.seen(b'+QIURC: "recv",%d\r\n' % inc, 3)
        assert host.at(f"AT+QICLOSE={inc},0") == b"\r\nOK\r\n"
        client.settimeout(3)
        assert client.recv(10) == b""
    finally:
        client.close()
    assert svc_ids(emulator, port) == (set(), set(), set())


def test_close_listener_and_listen_again_on_the_same_port_in_one_line(modem, emulator):
    host, advance, port = modem
    lport = free_port()
    assert host.at(f'AT+QIOPEN=1,0,"TCP LISTENER","127.0.0.1",0,{lport},0') == b"\r\nOK\r\n"
    assert host.seen(b"+QIOPEN: 0,0\r\n", 3)
    host.write(f'AT+QICLOSE=0;+QIOPEN=1,0,"TCP LISTENER","127.0.0.1",0,{lport},0\r\n')
    assert host.read_until(ANSWER, timeout=3) == b"\r\nOK\r\n"
    assert host.seen(b"+QIOPEN: 0,", 3) + host.read_until(b"\r\n") == b"+QIOPEN: 0,0\r\n"


def test_close_udp_service_and_bind_its_port_again_in_one_line(modem, emulator):
    host, advance, port = modem
    lport = free_port(socket.SOCK_DGRAM)
    assert host.at(f'AT+QIOPEN=1,2,"UDP SERVICE","127.0.0.1",0,{lport},0') == b"\r\nOK\r\n"
    assert host.seen(b"+QIOPEN: 2,0\r\n", 3)
    host.write(f'AT+QICLOSE=2;+QIOPEN=1,2,"UDP SERVICE","127.0.0.1",0,{lport},0\r\n')
    assert host.read_until(ANSWER, timeout=3) == b"\r\nOK\r\n"
    assert host.seen(b"+QIOPEN: 2,", 3) + host.read_until(b"\r\n") == b"+QIOPEN: 2,0\r\n"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"dgram", ("127.0.0.1", lport))
        assert host.seen(b'+QIURC: "recv",2\r\n', 3)
    assert host.at("AT+QICLOSE=2") == b"\r\nOK\r\n"
    assert host.quiet_for(0.2) == b""


# -- AT&D2 -----------------------------------------------------------------------------------
def test_dtr_drop_with_d2_frees_the_id_at_once_and_closes_the_connection(modem, emulator, echo):
    host, advance, port = modem
    assert host.at("AT&D2") == b"\r\nOK\r\n"
    host.write(f'AT+QSSLOPEN=1,1,6,"{SSL_HOST}",{SSL_PORT},2\r\n')
    assert host.read_until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n"), timeout=5) == b"\r\nCONNECT\r\n"
    assert emulator.control("dtr", level=0)["ok"]
    assert host.read_until(re.compile(rb"\r\n(NO CARRIER|OK)\r\n"), timeout=3) == b"\r\nNO CARRIER\r\n"
    assert emulator.control("dtr", level=1)["ok"]
    # The id is free in the very next line: the reopen is no 563.
    assert host.at(f'AT+QSSLOPEN=1,1,6,"{SSL_HOST}",{SSL_PORT},0') == b"\r\nOK\r\n"
    assert host.seen(b"+QSSLOPEN: 6,", 5) + host.read_until(b"\r\n") == b"+QSSLOPEN: 6,0\r\n"
    assert host.at("ATO") == b"\r\nNO CARRIER\r\n"
    wait_until(lambda: len(echo.connections) == 2)
    wait_until(lambda: echo.connections[0].close_notify_received)    # docs: close_notify, socket freed
    assert b"closed" not in host.quiet_for(0.3)


# -- the host hangs up mid-linger ------------------------------------------------------------
def test_hangup_mid_linger_the_ok_never_reaches_the_next_host(modem, emulator):
    host, advance, port = modem
    with TcpServer("sink") as server:
        emulator.router.add_map("stay.example", 80, "127.0.0.1", server.port)
        qiopen(host, 1, addr="stay.example", port=80)
        host.write("AT+QICLOSE=1,5\r\n")
        advance(0)
        time.sleep(0.1)
        host.close()
        time.sleep(0.3)                                   # the emulator sees the hang-up
        host = Host(port.path)
        try:
            host.write("AT\r\n")
            advance(0)
            assert host.quiet_for(0.3) == b""             # waits behind the linger
            advance(5.5)
            assert host.read_until(b"\r\nOK\r\n", timeout=3) == b"\r\nOK\r\n"
            assert host.quiet_for(0.3) == b""             # one OK: the AT's, not the close's
            assert server.gone(0)
            assert host.at("AT+QISTATE=1,1") == b"\r\nOK\r\n"
        finally:
            host.close()


# -- the bearer, a reboot --------------------------------------------------------------------
def test_pdp_deact_during_a_linger_reports_nothing_about_the_closed_id(modem, emulator, tcp_echo):
    host, advance, port = modem
    with TcpServer("sink") as server:
        emulator.router.add_map("stay.example", 80, "127.0.0.1", server.port)
        qiopen(host, 1, addr="stay.example", port=80)
        qiopen(host, 2)
        host.write("AT+QICLOSE=1,5\r\n")
        advance(0)
        assert emulator.control("pdp_deact", cid=1)["ok"]
        advance(5.5)
        out = host.read_until(b"\r\nOK\r\n", timeout=3)
        out += host.read_until(b'"closed",2\r\n', timeout=5) + host.quiet_for(0.4)
        assert out.startswith(b"\r\nOK\r\n"), out
        assert b'"closed",2' in out                       # the open one reports
        assert b'"closed",1' not in out, out              # the closed one does not
        assert server.gone(0)


# Was a bug, fixed (older than ab97365): a reboot (control 'reboot', as AT+CFUN=1,1) aborts only
# the service's sockets; one whose AT+QICLOSE lingers was taken out of the service already, so
# its TCP connection stays half-open until the close timeout (here 60 s) on the rebooted modem
def test_reboot_during_a_linger_drops_the_lingering_connection(modem, emulator):
    """A reboot drops every connection silently (docs: AT+CFUN=1,1 sockets dropped); a
    close still lingering must not keep its TCP connection open past the reboot."""
    host, advance, port = modem
    with TcpServer("sink") as server:
        emulator.router.add_map("stay.example", 80, "127.0.0.1", server.port)
        qiopen(host, 1, addr="stay.example", port=80)
        host.write("AT+QICLOSE=1,60\r\n")
        advance(0)
        assert host.quiet_for(0.2) == b""
        assert server.gone(0)                              # our FIN: lingering now
        assert tcp_fds_to(server.port) == 1
        assert emulator.control("reboot", ms=10)["ok"]
        advance(0.1)
        wait_until(lambda: tcp_fds_to(server.port) == 0, 2)  # else: survived the reboot


# -- a transparent open orphaned by a hang-up ------------------------------------------------
class HeldProxy:
    """A TCP proxy to 127.0.0.1:target that holds the client's first bytes (the
    ClientHello) until release(); kill() ends both sides with a FIN."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.port = self.listener.getsockname()[1]
        self.got_hello = threading.Event()
        self._release = threading.Event()
        self.socks: list[socket.socket] = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        upstream = socket.create_connection(("127.0.0.1", self.target))
        self.socks += [client, upstream]
        first = client.recv(65536)
        self.got_hello.set()
        self._release.wait(10)
        try:
            upstream.sendall(first)
        except OSError:                 # closed by the test meanwhile
            return
        threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()
        self._pipe(client, upstream)

    @staticmethod
    def _pipe(a, b) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass

    def release(self) -> None:
        self._release.set()

    def kill(self) -> None:
        for s in self.socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.listener.close()
        for s in self.socks:
            s.close()


@contextmanager
def held_transparent_open(host, emulator, echo):
    """A transparent AT+QSSLOPEN (id 0) whose ClientHello a HeldProxy in front of the echo
    server holds: the open is pending when this yields the proxy."""
    proxy = HeldProxy(echo.address[1])
    try:
        emulator.router.add_map("held.example", 443, "127.0.0.1", proxy.port)
        host.write('AT+QSSLOPEN=1,1,0,"held.example",443,2\r\n')
        assert proxy.got_hello.wait(3)
        yield proxy
    finally:
        proxy.release()
        proxy.close()


# Was a bug, fixed (regression of ab97365): a transparent open whose CONNECT was orphaned by a
# hang-up stays in OnlineDelivery._connecting forever; its peer's close is then swallowed (no
# '+QSSLURC: "closed"' for the next host, the socket state 4 unannounced)
def test_orphaned_transparent_open_then_peer_close_reports_closed(modem, emulator, echo):
    host, advance, port = modem
    with held_transparent_open(host, emulator, echo) as proxy:
        host.close()
        time.sleep(0.3)                                    # the emulator sees the hang-up
        host = Host(port.path)
        try:
            proxy.release()
            wait_until(lambda: any(s["state"] == "CONNECTED" for s in emulator.control("state")["sockets"]))
            assert host.at("AT") == b"\r\nOK\r\n"          # the open's CONNECT was orphaned
            proxy.kill()                                   # the server goes: FIN
            assert host.seen(b'+QSSLURC: "closed",0\r\n', 3)
            assert host.at("ATO") == b"\r\nNO CARRIER\r\n"
            assert host.at("AT+QSSLCLOSE=0") == b"\r\nOK\r\n"
            assert connecting(emulator, port) == 0
        finally:
            host.close()


# -- more: URCs queued behind a linger, the bearer under a linger, ML302 ----------------------
# Was a bug, fixed (older than ab97365): a URC raised for an id while the port was busy waits in
# the interpreter's queue and is written after the OK of the line that closed that id ('+QIURC:
# "recv",1' after 'AT+QICLOSE=0,2;+QICLOSE=1,0' answered OK)
def test_urc_queued_behind_a_linger_about_an_id_the_same_line_then_closes(modem, emulator, tcp_echo):
    """Id 0 lingers; meanwhile id 1's server sends and closes (its "recv"/"closed" URCs wait
    behind the busy port); the same line then closes id 1.  After that line's OK the host
    must read nothing about id 1: it is closed, and a "closed",1 now reads as the end of the
    host's next socket on id 1."""
    host, advance, port = modem
    with TcpServer("sink") as server:
        emulator.router.add_map("stay.example", 80, "127.0.0.1", server.port)
        qiopen(host, 0, addr="stay.example", port=80)
        qiopen(host, 1, addr="stay.example", port=80)
        wait_until(lambda: len(server.connections) == 2)
        host.write("AT+QICLOSE=0,2;+QICLOSE=1,0\r\n")
        advance(0)
        server.connections[1].sock.sendall(b"late")
        server.connections[1].close()              # FIN (shutdown wakes the reader)
        time.sleep(0.3)
        advance(2.5)
        out = host.read_until(ANSWER, timeout=3) + host.quiet_for(0.3)
        assert out == b"\r\nOK\r\n", out


# Was a bug, fixed (older than ab97365): pdp_lost walks only the service's sockets; a socket
# whose AT+QICLOSE lingers left the service already, so it keeps its TCP connection to the
# server after the bearer went, until its close timeout
def test_pdp_deact_during_a_linger_drops_the_lingering_connection(modem, emulator):
    """The bearer goes while a close lingers: no packet can move any more, so the linger's
    connection goes too (as every other socket's on that context does), at once."""
    host, advance, port = modem
    with TcpServer("sink") as server:
        emulator.router.add_map("stay.example", 80, "127.0.0.1", server.port)
        qiopen(host, 1, addr="stay.example", port=80)
        host.write("AT+QICLOSE=1,60\r\n")
        advance(0)
        assert server.gone(0)                              # our FIN: lingering now
        assert tcp_fds_to(server.port) == 1
        assert emulator.control("pdp_deact", cid=1)["ok"]
        advance(0.1)
        wait_until(lambda: tcp_fds_to(server.port) == 0, 2)


def test_ml302_close_twice_in_one_line_then_state_shows_closed(emulator, open_modem, echo):
    host, port = open_modem("ml302")
    assert host.at('AT+CGDCONT=1,"IP","CMNET"') == b"\r\nOK\r\n"
    assert host.at("AT+CGACT=1,1").endswith(b"OK\r\n")
    assert host.at(f'AT+QSSLOPEN=2,0,"{SSL_HOST}",{SSL_PORT},0') == b"\r\nOK\r\n"
    assert host.seen(b"+QSSLOPEN: 2,0\r\n", 5)
    host.write("AT+QSSLCLOSE=2;+QSSLCLOSE=2\r\n")
    out = host.read_until(re.compile(rb"CLOSE OK\r\n(?s:.*)CLOSE OK\r\n"), timeout=5) + host.quiet_for(0.3)
    assert out.startswith(b"\r\nOK\r\n") and out.count(b"2,CLOSE OK\r\n") == 2, out
    assert b"QSSLURC" not in out
    state = host.at("AT+QSSLSTATE")
    assert b'+QSSLSTATE: 2,"TCP","' in state and b'",443,"CLOSED",1' in state, state
    assert b'"IP STATUS"' in state
    assert host.at(f'AT+QSSLOPEN=2,0,"{SSL_HOST}",{SSL_PORT},0') == b"\r\nOK\r\n"
    assert host.seen(b"+QSSLOPEN: 2,0\r\n", 5)


def test_incoming_connection_during_a_linger_takes_the_freed_id_and_survives_its_end(modem, emulator):
    """The lingering close freed its id at once: a connection a listener accepts meanwhile
    may take it.  Its "incoming" URC follows the close's OK, and the old linger's end (the
    abort at the close timeout) leaves the new socket alone."""
    host, advance, port = modem
    lport = free_port()
    assert host.at(f'AT+QIOPEN=1,0,"TCP LISTENER","127.0.0.1",0,{lport},0') == b"\r\nOK\r\n"
    assert host.seen(b"+QIOPEN: 0,0\r\n", 3)
    a = socket.create_connection(("127.0.0.1", lport), timeout=3)
    b = None
    try:
        assert host.seen(b'+QIURC: "incoming",1,0,', 3)
        host.read_until(b"\r\n")
        host.write("AT+QICLOSE=1,3\r\n")                   # a never closes: the full linger
        advance(0)
        assert host.quiet_for(0.2) == b""
        b = socket.create_connection(("127.0.0.1", lport), timeout=3)
        time.sleep(0.3)
        assert host.quiet_for(0.1) == b""                  # the URC waits for the answer
        advance(3.1)
        out = host.read_until(b"\r\nOK\r\n", timeout=3)
        assert out == b"\r\nOK\r\n", out
        urc = host.seen(re.compile(rb'\+QIURC: "incoming",(\d+),0,"127\.0\.0\.1",\d+\r\n'), 3)
        new = int(re.search(rb'"incoming",(\d+)', urc).group(1))
        a.settimeout(3)
        assert a.recv(10) == b""                           # the old one is gone
        advance(15)
        b.sendall(b"hello")
        assert host.seen(b'+QIURC: "recv",%d\r\n' % new, 3)
        assert re.search(rb'\+QISTATE: %d,"TCP INCOMING","127\.0\.0\.1",\d+,%d,2,' % (new, lport),
                         host.at(f"AT+QISTATE=1,{new}"))
        assert b"closed" not in host.quiet_for(0.2)
    finally:
        a.close()
        if b is not None:
            b.close()


# Was a bug, fixed (regression of ab97365): as above, TCP: a transparent AT+QIOPEN answered late
# (control 'slow') and orphaned by a hang-up keeps its socket in OnlineDelivery._connecting; the
# peer's close is swallowed, no '+QIURC: "closed"'
def test_orphaned_slow_transparent_tcp_open_then_peer_close_reports_closed(modem, emulator):
    host, advance, port = modem
    with TcpServer("sink") as server:
        emulator.router.add_map("stay.example", 80, "127.0.0.1", server.port)
        assert emulator.control("slow", command="+QIOPEN", ms=1000)["ok"]
        host.write('AT+QIOPEN=1,3,"TCP","stay.example",80,0,2\r\n')
        advance(0)
        wait_until(lambda: server.connections)
        time.sleep(0.1)
        host.close()
        time.sleep(0.3)                                    # the emulator sees the hang-up
        host = Host(port.path)
        try:
            advance(1.1)                                   # the CONNECT is due: orphaned
            assert host.at("AT") == b"\r\nOK\r\n"
            server.connections[0].sock.shutdown(socket.SHUT_RDWR)     # the server goes: FIN
            assert host.seen(b'+QIURC: "closed",3\r\n', 3)
            assert host.at("AT+QICLOSE=3") == b"\r\nOK\r\n"
            assert connecting(emulator, port) == 0
        finally:
            host.close()


# -- from an independent review of the close changes (all failed before their fixes) ---------
def test_reboot_while_a_slow_close_waits_drops_the_connection(modem, emulator):
    """The close takes the socket at once (lingering from then on), also while a `slow`
    delay holds the close's answer: a reboot in that delay drops the connection."""
    host, advance, port = modem
    with TcpServer("sink") as server:
        emulator.router.add_map("stay.example", 80, "127.0.0.1", server.port)
        qiopen(host, 1, addr="stay.example", port=80)
        wait_until(lambda: server.connections)
        assert emulator.control("slow", command="+QICLOSE", ms=1000)["ok"]
        host.write("AT+QICLOSE=1,60\r\n")
        advance(0)
        time.sleep(0.2)
        assert emulator.control("reboot", ms=10)["ok"]
        advance(0.1)
        wait_until(lambda: tcp_fds_to(server.port) == 0, timeout=3)


def test_an_open_answer_queued_for_an_id_the_line_then_closes_is_dropped(modem, emulator):
    """"+QIOPEN: 1,0" waiting behind id 0's linger, then the same line closes id 1."""
    host, advance, port = modem
    with TcpServer("sink") as server:
        emulator.router.add_map("stay.example", 80, "127.0.0.1", server.port)
        qiopen(host, 0, addr="stay.example", port=80)
        wait_until(lambda: server.connections)
        host.write('AT+QIOPEN=1,1,"TCP","stay.example",80,0,0;+QICLOSE=0,2;+QICLOSE=1,0\r\n')
        advance(0)
        wait_until(lambda: len(server.connections) == 2)
        time.sleep(0.3)
        advance(2.5)
        out = host.read_until(ANSWER, timeout=3) + host.quiet_for(0.5)
        assert out == b"\r\nOK\r\n", out


def test_a_failed_open_answer_queued_for_an_id_the_line_then_closes_is_dropped(modem, emulator, echo):
    """The same for a refused SSL open whose socket is gone when its id is closed."""
    host, advance, port = modem
    ssl_open(host, 0)
    emulator.router.add_map("dead.example", 9000, "127.0.0.1", free_port())
    assert emulator.control("slow", command="+QSSLCLOSE", ms=500)["ok"]
    host.write('AT+QSSLOPEN=1,1,1,"dead.example",9000,0;+QSSLCLOSE=0;+QSSLCLOSE=1\r\n')
    advance(0)
    time.sleep(0.3)
    advance(0.6)
    time.sleep(0.2)
    advance(0.6)
    out = host.read_until(ANSWER, timeout=3) + host.quiet_for(0.5)
    assert out == b"\r\nOK\r\n", out


@pytest.mark.parametrize("leave", ["dtr", "hangup"])
def test_a_port_leaving_online_mode_in_the_connects_turn_still_hears_of_the_close(
        modem, emulator, monkeypatch, leave):
    """A server sends and closes with the handshake; the port leaves online mode in the
    very turn CONNECT went out (AT&D1 + DTR drop, or the host's hang-up): the close is
    reported as one after "+++" ("closed"), not lost."""
    from emulator.sockets.delivery import SocketLink
    from emulator.testing.peers import TlsServer
    from tests.e2e.test_adversarial_dial import ssl_open_line
    host, advance, port = modem
    assert host.at("AT&D1") == b"\r\nOK\r\n"
    started = SocketLink.started

    def started_then_left(self):
        started(self)
        if leave == "dtr":
            self.delivery.svc.modem.interpreter.dtr_drop()
        else:
            self.delivery.svc.modem.host_hangup()
    monkeypatch.setattr(SocketLink, "started", started_then_left)
    with TlsServer(mode="send_then_close", payload=b"GREETING") as server:
        emulator.router.add_map("greet.example", 443, "127.0.0.1", server.port)
        host.write(ssl_open_line(6, "greet.example", 443, mode=2) + "\r\n")
        out = host.read_until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n"), timeout=5) + host.quiet_for(0.5)
        monkeypatch.undo()
        if leave == "hangup":
            host.close()
            host = Host(port.path)
            out += host.quiet_for(0.5)
        # (however late it comes: seen() also looks at what was read before)
        assert b'"closed",6' in out or b'"recv",6' in out or host.seen(re.compile(rb'"(closed|recv)",6'), 5), out
        if leave == "hangup":
            host.close()


def test_a_reboot_during_a_pending_transparent_open_frees_the_port(modem, emulator, echo):
    """The open's pending answer ends (ERROR) instead of holding the port forever."""
    host, advance, port = modem
    with held_transparent_open(host, emulator, echo):
        assert emulator.control("reboot", ms=10)["ok"]
        advance(0.1)
        time.sleep(0.3)
        assert host.at("AT", timeout=2).endswith(b"OK\r\n")
