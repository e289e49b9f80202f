"""Hostile servers, fourth round: what test_adversarial_hostile_servers.py / _2.py / _3.py,
test_adversarial_open_answer.py (the Finished with data, close_notify, FIN or RST in one segment,
EC2x buffer / push / transparent, ML302 buffer with close_notify + FIN), test_adversarial_event_order
and test_adversarial_hostile_peers_tcpip do not do.

The end in the flight of the server's Finished (the modem has not yet told the host
+QSSLOPEN / CONNECT when it reads it):
* EC2x, each access mode: the data, close_notify and the TCP connection LEFT OPEN (the emulator
  must close its side by itself); 40 KB in three records then the end (FIN, with or without
  close_notify): every byte once, in order, the end reported last;
* EC2x, each access mode: an empty application record, a warning alert or an encrypted
  HelloRequest (renegotiation 0) in that flight before the data and close_notify;
  an empty record alone before close_notify: the open, then only the end (no "recv", no bytes);
* ML302: buffer with close_notify + RST, FIN alone, close_notify with TCP open; transparent
  (connectmode 1) with each of these and with close_notify + FIN: CONNECT, bytes, NO CARRIER.

Other server behaviours:
* one 16384-byte record sent a byte per TCP segment, its last byte held back: nothing reaches
  the host until the record is whole, then one "recv" URC and the bytes exactly once;
* 1000 one-byte records, 500 more arriving while the host reads, read with AT+QSSLRECV=<id>,1
  (EC2x) / AT+QSSLRECV=1,<ssid>,1 (ML302): one byte per answer, one "recv" URC until empty;
* an encrypted HelloRequest while the host is at the AT+QSSLSEND "> " prompt (renegotiation
  0: refused with a warning alert, SEND OK); a real renegotiation by `openssl s_server` ('r')
  completing while the host sits at the prompt (renegotiation 1);
* a server that answers the modem's close_notify (AT+QSSLCLOSE=<id>,<close_timeout>) with
  application data, then closes, holds the connection, or resets: OK (at close_timeout on the
  modem clock when the server holds), never a URC of the closed id afterwards;
* a TCP RST between the host's AT+QSSLSEND line and its data (buffer and push, the server's
  last bytes still unreported; ML302 too): ERROR (567), then the data, then "closed".

Checked each time: exact bytes on the pty, every byte once and in order, no ERROR log record or
traceback (ec2x_strict / ml302_strict), AT answering afterwards.  Timers run on the modem's
manual clock; waits are on bytes or states with timeouts."""
from __future__ import annotations

import re
import socket
import threading

import pytest

from emulator.sockets.service import ssl_service
from emulator.sockets.ssl_socket import CONNECTED
from emulator.testing.peers import OpenSslServer
from tests.e2e.hostile_support import open_answer, recv, send_rst
from tests.e2e.socket_support import tcp_fds_to, wait_for
from tests.e2e.test_adversarial_hostile_peers_tcpip import outq
from tests.e2e.test_adversarial_hostile_servers_2 import (CT_APP, NAME, WARNING, Conn, Server,
                                                          handshake_messages, pattern, qigeterror,
                                                          read_all, ssl_open, state, still_usable,
                                                          write_bytewise)
from tests.e2e.test_adversarial_open_answer import TLS_HOST, FlightServer, bytewise, read_pushed, route

CLOSE_NOTIFY = b"\x01\x00"


@pytest.fixture
def modem(ec2x_strict):
    return ec2x_strict


@pytest.fixture
def ml(ml302_strict):
    return ml302_strict


def flight_then(c: Conn, tail) -> None:
    """The handshake, with tail(c) (records sealed under the new keys) in the same send() as
    the server's ChangeCipherSpec + Finished; the client's records decrypted from then on."""
    first = c.first_flight()
    server_random = handshake_messages(first)[0][6:38]
    c.sock.sendall(first)
    last = c.last_flight()
    c._derive(server_random)
    rest = c.inc.read()
    threading.Thread(target=c._reader, args=(rest,), daemon=True).start()
    c.sock.sendall(last + tail(c))


def server_got_fin(server_port: int) -> bool:
    """A connection accepted on 127.0.0.1:server_port is in CLOSE_WAIT: the client's FIN came."""
    with open("/proc/net/tcp") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    return any(r[1] == f"0100007F:{server_port:04X}" and r[3] == "08" for r in rows)


def rst(c: Conn) -> None:
    """An RST now, also while c's reader thread sits in recv() (a bare close() would wait
    for that recv to return): SO_LINGER 0, SHUT_RD wakes the reader, close()."""
    send_rst(c.sock)


def forget_answers(host, cid: int) -> None:
    """Mark the +QSSLOPEN answers of cid seen so far as consumed (a later open_answer()
    must wait for the next one, not find an old one in the transcript)."""
    for m in re.finditer(rb"\+QSSLOPEN: %d," % cid, host.transcript):
        host._consumed.add(m.start())


def usable_again(host, emulator, cid: int) -> None:
    forget_answers(host, cid)
    still_usable(host, emulator, cid)


def ml302_close(host, ssid: int) -> None:
    assert host.at(f"AT+QSSLCLOSE={ssid}") == b"\r\nOK\r\n"
    want = b"\r\n%d,CLOSE OK\r\n" % ssid
    assert host.read_until(want, timeout=5) == want


def peer_gone(emulator, port, cid: int) -> bool:
    """The modem's socket cid has taken the peer's end (no longer CONNECTED)."""
    return emulator.run(lambda: ssl_service(port.modem).sockets[cid].state) is not CONNECTED


def inbox_len(emulator, port, cid: int) -> int:
    return emulator.run(lambda: len(ssl_service(port.modem).sockets[cid].inbox))


def ml302_recv(host, ssid: int, n: int) -> bytes:
    answer = host.at(f"AT+QSSLRECV=1,{ssid},{n}")
    if answer == b"\r\nOK\r\n":
        return b""
    m = re.match(rb"\r\n\+QSSLRECV: [0-9.]+:443,TCP,(\d+)\r\n", answer)
    assert m, answer
    size = int(m.group(1))
    assert 0 < size <= n and answer[m.end() + size:] == b"\r\n\r\nOK\r\n", answer[-40:]
    return answer[m.end():m.end() + size]


# == the end in the flight of the server's Finished ==============================================
@pytest.mark.parametrize("mode", [0, 1, 2], ids=["buffer", "push", "transparent"])
def test_close_notify_with_the_finished_and_tcp_left_open(modem, emulator, mode):
    """Finished + data + close_notify in one segment; the server then keeps its TCP side open
    (and reads on).  The emulator must close its side by itself (the server sees EOF before any
    AT+QSSLCLOSE); the host gets the answer, the data, the end -- in that order, once each."""
    host, advance, port = modem
    data = pattern(900, 7)
    with FlightServer(tail=[data, "close_notify"], after="hold") as server:
        route(emulator, server)
        bytewise(host, f'AT+QSSLOPEN=1,1,3,"{TLS_HOST}",443,{mode}')
        if mode == 2:
            want = b"\r\nCONNECT\r\n" + data + b"\r\nNO CARRIER\r\n"
            assert host.read_until(b"\r\nNO CARRIER\r\n", timeout=5) == want
        else:
            out = host.read_until(b'+QSSLURC: "closed",3\r\n', timeout=5)
            recv_urc = (b'\r\n+QSSLURC: "recv",3\r\n' if mode == 0
                        else b'\r\n+QSSLURC: "recv",3,%d\r\n' % len(data) + data + b"\r\n")
            assert out == b"\r\nOK\r\n\r\n+QSSLOPEN: 3,0\r\n" + recv_urc + b'\r\n+QSSLURC: "closed",3\r\n', out
        wait_for(lambda: server_got_fin(server.port), 5, "the emulator's FIN, sent by itself")
        if mode == 0:
            assert host.at("AT+QSSLRECV=3,1500") == b"\r\n+QSSLRECV: 900\r\n" + data + b"\r\n\r\nOK\r\n"
            assert host.at("AT+QSSLRECV=3,1500") == b"\r\n+QSSLRECV: 0\r\n\r\nOK\r\n"
        assert state(host, 3) == 4
        assert host.at("AT+QSSLSEND=3,1") == b"\r\nERROR\r\n"
        assert qigeterror(host) == 567
        assert host.at("AT+QSSLCLOSE=3") == b"\r\nOK\r\n"
        assert host.quiet_for(0.1) == b""
        assert host.transcript.count(b"+QSSLOPEN: 3,") == (0 if mode == 2 else 1)
    assert host.at("AT") == b"\r\nOK\r\n"


@pytest.mark.parametrize("close_notify", [True, False], ids=["close_notify_fin", "fin"])
@pytest.mark.parametrize("mode", [0, 1, 2], ids=["buffer", "push", "transparent"])
def test_three_records_with_the_finished_then_the_end(modem, emulator, mode, close_notify):
    """40 KB (three records: 16384 + 16384 + 7232) with the Finished, then the end (close_notify
    and FIN, or a bare FIN): the answer, every byte once and in order, then the end."""
    host, advance, port = modem
    data = pattern(40_000, 11)
    tail = [data] + (["close_notify"] if close_notify else [])
    with FlightServer(tail=tail, after="fin") as server:
        route(emulator, server)
        bytewise(host, f'AT+QSSLOPEN=1,1,5,"{TLS_HOST}",443,{mode}')
        if mode == 2:
            want = b"\r\nCONNECT\r\n" + data + b"\r\nNO CARRIER\r\n"
            got = host.read_until(b"\r\nNO CARRIER\r\n", timeout=10)
            assert got == want, (len(got), got[:40], got[-40:])
        elif mode == 1:
            head = b"\r\nOK\r\n\r\n+QSSLOPEN: 5,0\r\n"
            assert host.read_exactly(len(head), timeout=5) == head
            assert read_pushed(host, 5, len(data)) == data
            assert host.read_until(b'+QSSLURC: "closed",5\r\n', timeout=5) == b'\r\n+QSSLURC: "closed",5\r\n'
        else:
            out = host.read_until(b'+QSSLURC: "closed",5\r\n', timeout=5)
            assert out == (b'\r\nOK\r\n\r\n+QSSLOPEN: 5,0\r\n\r\n+QSSLURC: "recv",5\r\n'
                           b'\r\n+QSSLURC: "closed",5\r\n'), out
            assert read_all(host, 5, len(data), sizes=(1500, 7, 1499)) == data
            assert recv(host, 5) == b""
        assert state(host, 5) == 4
        assert host.at("AT+QSSLCLOSE=5") == b"\r\nOK\r\n"
        assert host.quiet_for(0.1) == b""
        assert host.transcript.count(b"closed") + host.transcript.count(b"NO CARRIER") == 1
    assert host.at("AT") == b"\r\nOK\r\n"


EXTRAS = {
    "empty_record": lambda c: c.seal(CT_APP, b""),
    "warning_alert": lambda c: c.alert(WARNING, 90),              # user_canceled
    "hello_request": lambda c: c.hello_request(),                 # renegotiation 0: refused
}


@pytest.mark.parametrize("extra", list(EXTRAS))
@pytest.mark.parametrize("mode", [0, 1, 2], ids=["buffer", "push", "transparent"])
def test_odd_record_with_the_finished_then_data_and_close_notify(modem, emulator, mode, extra):
    """The Finished, then in the same segment an empty application record / a warning alert /
    an encrypted HelloRequest, the data, close_notify, and FIN: none of the odd records is
    data or an end; the data arrive once after the answer, then the end."""
    host, advance, port = modem
    data = pattern(1000, 23)

    def script(c: Conn) -> None:
        flight_then(c, lambda c: EXTRAS[extra](c) + c.app(data) + c.alert(WARNING, 0))
        c.sock.shutdown(socket.SHUT_WR)
        c.eof.wait(10)

    with Server(script, emulator):
        ssl_open_line = f'AT+QSSLOPEN=1,1,4,"{NAME}",443,{mode}'
        bytewise(host, ssl_open_line)
        if mode == 2:
            want = b"\r\nCONNECT\r\n" + data + b"\r\nNO CARRIER\r\n"
            assert host.read_until(b"\r\nNO CARRIER\r\n", timeout=5) == want
        else:
            out = host.read_until(b'+QSSLURC: "closed",4\r\n', timeout=5)
            recv_urc = (b'\r\n+QSSLURC: "recv",4\r\n' if mode == 0
                        else b'\r\n+QSSLURC: "recv",4,%d\r\n' % len(data) + data + b"\r\n")
            assert out == b"\r\nOK\r\n\r\n+QSSLOPEN: 4,0\r\n" + recv_urc + b'\r\n+QSSLURC: "closed",4\r\n', out
        if mode == 0:
            assert read_all(host, 4, len(data), sizes=(333,)) == data
            assert recv(host, 4) == b""
        assert state(host, 4) == 4
        assert host.at("AT+QSSLCLOSE=4") == b"\r\nOK\r\n"
        assert host.quiet_for(0.1) == b""
    usable_again(host, emulator, 4)


@pytest.mark.parametrize("mode", [0, 1, 2], ids=["buffer", "push", "transparent"])
def test_empty_record_alone_with_the_finished_then_close_notify(modem, emulator, mode):
    """The Finished, one empty application record, close_notify (TCP left open): the open
    succeeds, then only the end -- no "recv" URC, no bytes (an empty record is no data)."""
    host, advance, port = modem

    def script(c: Conn) -> None:
        flight_then(c, lambda c: c.seal(CT_APP, b"") + c.alert(WARNING, 0))
        c.eof.wait(10)

    with Server(script, emulator) as server:
        bytewise(host, f'AT+QSSLOPEN=1,1,6,"{NAME}",443,{mode}')
        if mode == 2:
            assert host.read_until(b"\r\nNO CARRIER\r\n", timeout=5) == b"\r\nCONNECT\r\n\r\nNO CARRIER\r\n"
        else:
            out = host.read_until(b'+QSSLURC: "closed",6\r\n', timeout=5)
            assert out == b'\r\nOK\r\n\r\n+QSSLOPEN: 6,0\r\n\r\n+QSSLURC: "closed",6\r\n', out
        wait_for(server.conns[0].eof.is_set, 5, "the emulator closing its side")
        if mode == 0:
            assert host.at("AT+QSSLRECV=6,1500") == b"\r\n+QSSLRECV: 0\r\n\r\nOK\r\n"
        assert state(host, 6) == 4
        assert host.at("AT+QSSLCLOSE=6") == b"\r\nOK\r\n"
        assert host.quiet_for(0.1) == b""


ML_ENDS = {
    "close_notify_rst": (["close_notify"], "rst"),
    "fin": ([], "fin"),
    "close_notify_tcp_open": (["close_notify"], "hold"),
    "close_notify_fin": (["close_notify"], "fin"),
}


# (buffer + close_notify_fin: test_adversarial_open_answer.test_ml302_buffer_data_with_finished)
@pytest.mark.parametrize("mode,end", [(mode, end) for mode in (0, 1) for end in ML_ENDS
                                      if (mode, end) != (0, "close_notify_fin")],
                         ids=lambda v: {0: "buffer", 1: "transparent"}.get(v, v))
def test_ml302_data_and_end_with_the_finished(ml, emulator, mode, end):
    """ML302: the Finished, data and the end in one flight.  connectmode 0: OK, +QSSLOPEN:
    <ssid>,0, "recv", "close", the data readable; connectmode 1: CONNECT, the bytes, NO CARRIER."""
    host, advance, port = ml
    data = pattern(700, 31)
    extra, after = ML_ENDS[end]
    with FlightServer(tail=[data, *extra], after=after) as server:
        route(emulator, server)
        bytewise(host, f'AT+QSSLOPEN=2,0,"{TLS_HOST}",443,{mode}')
        if mode == 1:
            want = b"\r\nCONNECT\r\n" + data + b"\r\nNO CARRIER\r\n"
            assert host.read_until(b"\r\nNO CARRIER\r\n", timeout=5) == want
            assert host.at("AT") == b"\r\nOK\r\n"
        else:
            out = host.read_until(b'+QSSLURC: "close",2\r\n', timeout=5)
            assert out == (b'\r\nOK\r\n\r\n+QSSLOPEN: 2,0\r\n\r\n+QSSLURC: "recv",1,2\r\n'
                           b'\r\n+QSSLURC: "close",2\r\n'), out
            got = ml302_recv(host, 2, 500) + ml302_recv(host, 2, 500)
            assert got == data
            assert ml302_recv(host, 2, 500) == b""
        if after == "hold":
            wait_for(lambda: server_got_fin(server.port), 5, "the emulator's FIN, sent by itself")
        assert re.search(rb'\+QSSLSTATE: 2,"TCP","[0-9.]+",443,"REMOTE CLOSING",1\r\n', host.at("AT+QSSLSTATE"))
        ml302_close(host, 2)
        assert host.quiet_for(0.1) == b""
        assert host.transcript.count(b"+QSSLOPEN: 2,") <= 1


# == a 16 KiB record a byte per TCP segment ======================================================
def test_full_record_one_byte_per_segment_delivered_only_whole(modem, emulator):
    """One record of 16384 plaintext bytes, written a byte per send() (TCP_NODELAY), its last
    byte held back: nothing reaches the host meanwhile (a record is delivered whole or not at
    all); then the last byte: one "recv" URC, every byte once, in order; the session goes on."""
    host, advance, port = modem
    data = pattern(16384, 3)
    go, held = threading.Event(), threading.Event()

    def script(c: Conn) -> None:
        c.handshake()
        rec = c.app(data)
        assert len(rec) == 5 + 8 + 16384 + 16
        for i in range(len(rec) - 1):
            c.sock.send(rec[i:i + 1])
        held.set()
        go.wait(10)
        c.sock.send(rec[-1:])
        got = c.wait_plaintext(3)
        c.sock.sendall(c.app(got))
        c.server.stall()

    with Server(script, emulator) as server:
        ssl_open(host, 0)
        assert open_answer(host, 0) == 0
        assert held.wait(20)
        conn = server.conns[0]
        wait_for(lambda: outq(conn.sock) == 0, 5, "the bytes taken by the modem's kernel")
        assert host.quiet_for(0.3) == b""
        assert inbox_len(emulator, port, 0) == 0
        go.set()
        assert host.read_until(b'+QSSLURC: "recv",0\r\n', timeout=5) == b'\r\n+QSSLURC: "recv",0\r\n'
        assert read_all(host, 0, len(data), sizes=(1500, 1, 1499)) == data
        assert recv(host, 0) == b""
        assert host.send_data(0, b"end") == b"\r\nSEND OK\r\n"
        assert host.read_until(b'+QSSLURC: "recv",0\r\n', timeout=5) == b'\r\n+QSSLURC: "recv",0\r\n'
        assert recv(host, 0) == b"end"
        assert host.transcript.count(b'"recv"') == 2
        assert host.at("AT+QSSLCLOSE=0,0") == b"\r\nOK\r\n"
        assert not server.failures


# == many one-byte records, read a byte at a time ===============================================
def test_one_byte_records_read_with_length_one(modem, emulator):
    """1000 records of one byte each, then (while the host reads) 500 more: AT+QSSLRECV=0,1
    answers exactly "+QSSLRECV: 1" with the next byte each time, one "recv" URC while the
    buffer never ran empty; +QSSLRECV: 0 at the end; the next record reports again."""
    host, advance, port = modem
    data = pattern(1500, 5)
    more, last = threading.Event(), threading.Event()

    def script(c: Conn) -> None:
        c.handshake()
        c.sock.sendall(b"".join(c.seal(CT_APP, data[i:i + 1]) for i in range(1000)))
        more.wait(10)
        c.sock.sendall(b"".join(c.seal(CT_APP, data[i:i + 1]) for i in range(1000, 1500)))
        last.wait(10)
        c.sock.sendall(c.seal(CT_APP, b"Z"))
        c.server.stall()

    with Server(script, emulator):
        ssl_open(host, 1)
        assert open_answer(host, 1) == 0
        assert host.read_until(b'+QSSLURC: "recv",1\r\n', timeout=5) == b'\r\n+QSSLURC: "recv",1\r\n'
        wait_for(lambda: inbox_len(emulator, port, 1) == 1000, 10, "the thousand bytes in")
        got = bytearray()
        for i in range(1500):
            if i == 10:
                more.set()
                wait_for(lambda: inbox_len(emulator, port, 1) == 1490, 10, "the 500 more in")
            answer = host.at("AT+QSSLRECV=1,1")
            assert answer == b"\r\n+QSSLRECV: 1\r\n" + data[i:i + 1] + b"\r\n\r\nOK\r\n", (i, answer)
            got += answer[16:17]
        assert bytes(got) == data
        assert host.at("AT+QSSLRECV=1,1") == b"\r\n+QSSLRECV: 0\r\n\r\nOK\r\n"
        assert host.transcript.count(b'"recv",1') == 1
        last.set()
        assert host.read_until(b'+QSSLURC: "recv",1\r\n', timeout=5) == b'\r\n+QSSLURC: "recv",1\r\n'
        assert host.at("AT+QSSLRECV=1,1") == b"\r\n+QSSLRECV: 1\r\nZ\r\n\r\nOK\r\n"
        assert host.at("AT+QSSLCLOSE=1,0") == b"\r\nOK\r\n"


def test_ml302_one_byte_records_read_with_length_one(ml, emulator):
    """ML302: 600 one-byte records (OpenSSL's own, any suite) read with AT+QSSLRECV=1,<ssid>,1:
    one byte per answer, in order, one "recv" URC; then the empty answer (OK)."""
    host, advance, port = ml
    data = pattern(600, 9)

    def script(c: Conn) -> None:
        c.handshake(seal=False)
        c.sock.sendall(b"".join(c.ossl_app(data[i:i + 1]) for i in range(len(data))))
        while c.sock.recv(65536):                 # until the modem's close (close_notify, FIN)
            pass
        c.sock.close()

    with Server(script, emulator, suites="ALL:@SECLEVEL=0"):
        assert host.at(f'AT+QSSLOPEN=3,0,"{NAME}",443,0') == b"\r\nOK\r\n"
        host.seen(b"+QSSLOPEN: 3,0\r\n")
        host.seen(b'+QSSLURC: "recv",1,3\r\n')
        wait_for(lambda: inbox_len(emulator, port, 3) == len(data), 10, "all records in")
        got = b"".join(ml302_recv(host, 3, 1) for _ in range(len(data)))
        assert got == data
        assert ml302_recv(host, 3, 1) == b""
        assert host.transcript.count(b'"recv"') == 1
        ml302_close(host, 3)


# == renegotiation requests while the host is at the send prompt ==================================
@pytest.mark.parametrize("mode", [0, 1], ids=["buffer", "push"])
def test_encrypted_hello_request_while_the_host_is_at_the_send_prompt(modem, emulator, mode):
    """renegotiation 0: the host has "> " for 12 bytes when the server sends an encrypted
    HelloRequest and a line.  The modem refuses it (warning no_renegotiation alert) while the
    prompt is out; nothing is written inside the prompt; the 12 bytes: SEND OK, they reach the
    server; then the line ("recv" / pushed), and the session goes on."""
    host, advance, port = modem
    line = b"after the hello request\n"
    go = threading.Event()

    def script(c: Conn) -> None:
        c.handshake()
        go.wait(10)
        c.sock.sendall(c.hello_request() + c.app(line))
        got = c.wait_plaintext(12)
        c.sock.sendall(c.app(got[::-1]))
        c.server.stall()

    with Server(script, emulator) as server:
        ssl_open(host, 2, mode=mode)
        assert open_answer(host, 2) == 0
        write_bytewise(host, b"AT+QSSLSEND=2,12\r")
        assert host.read_until(re.compile(rb"> |ERROR\r\n")) == b"\r\n> "
        go.set()
        conn = server.conns[0]
        with conn.changed:
            assert conn.changed.wait_for(lambda: conn.alerts(), 5), "the HelloRequest never answered"
        assert conn.alerts() == [b"\x01\x64"]                  # warning no_renegotiation
        wait_for(lambda: inbox_len(emulator, port, 2) == len(line), 5, "the line in")
        assert host.quiet_for(0.2) == b""
        host.write(b"twelve bytes")
        if mode == 0:
            want = b'\r\nSEND OK\r\n\r\n+QSSLURC: "recv",2\r\n'
            assert host.read_exactly(len(want), timeout=5) == want
            # (exactly the line's length: the server's answer to the 12 bytes may already be
            # in the buffer behind it)
            assert read_all(host, 2, len(line), sizes=(len(line),)) == line
        else:
            want = b'\r\nSEND OK\r\n\r\n+QSSLURC: "recv",2,%d\r\n' % len(line) + line + b"\r\n"
            assert host.read_exactly(len(want), timeout=5) == want
        assert conn.wait_plaintext(12) == b"twelve bytes"
        if mode == 0:
            host.seen(b'+QSSLURC: "recv",2\r\n')
            assert read_all(host, 2, 12) == b"setyb evlewt"
        else:
            assert read_pushed(host, 2, 12) == b"setyb evlewt"
        assert state(host, 2) == 2
        assert host.at("AT+QSSLCLOSE=2,0") == b"\r\nOK\r\n"


@pytest.mark.needs_native
def test_server_renegotiates_while_the_host_is_at_the_send_prompt(modem, emulator, pki):
    """renegotiation 1, `openssl s_server` ('r': HelloRequest) while the host has the "> "
    prompt: the renegotiation completes while the prompt is out (the network is served, the
    host is not interrupted); the host's bytes then SEND OK and reach the server; a line after
    it comes as one "recv" URC."""
    host, advance, port = modem
    cert, key = pki.server.load_args
    server = OpenSslServer(["-cert", cert, "-key", key, "-tls1_2"])
    try:
        route(emulator, server)
        assert host.at('AT+QSSLCFG="renegotiation",1,1') == b"\r\nOK\r\n"
        assert host.at(f'AT+QSSLOPEN=1,1,0,"{TLS_HOST}",443,0') == b"\r\nOK\r\n"
        assert open_answer(host, 0) == 0
        server.wait_for_output(rb"CIPHER is")
        write_bytewise(host, b"AT+QSSLSEND=0,9\r")
        assert host.read_until(re.compile(rb"> |ERROR\r\n")) == b"\r\n> "
        mark = server.mark()
        server.write(b"r\n")
        server.wait_for_output(rb"SSL_do_handshake -> 1", since=mark)
        assert host.quiet_for(0.1) == b""
        host.write(b"in prompt")
        assert host.read_until(re.compile(rb"\r\n(SEND OK|SEND FAIL|ERROR)\r\n"), timeout=5) == b"\r\nSEND OK\r\n"
        server.wait_for_output(rb"in prompt", since=mark)
        server.write(b"after reneg\n")
        assert host.read_until(b'+QSSLURC: "recv",0\r\n', timeout=5) == b'\r\n+QSSLURC: "recv",0\r\n'
        assert read_all(host, 0, len(b"after reneg\n")) == b"after reneg\n"
        assert state(host, 0) == 2
        assert host.at("AT+QSSLCLOSE=0,0") == b"\r\nOK\r\n"
    finally:
        server.stop()


# == a server that answers the modem's close_notify with data ======================================
@pytest.mark.parametrize("then", ["close", "hold", "rst"])
@pytest.mark.parametrize("mode", [0, 1], ids=["buffer", "push"])
def test_server_answers_close_notify_with_data(modem, emulator, mode, then):
    """AT+QSSLCLOSE=<id>,5: the server answers the modem's close_notify with 20 KB of
    application data, then its own close_notify and FIN ("close"), nothing ("hold": the TCP
    connection stays), or an RST.  OK -- for "hold" only when close_timeout has run out on
    the modem's clock --; no URC of the closed id, ever; the id opens again."""
    host, advance, port = modem
    late = pattern(20_000, 77)

    def script(c: Conn) -> None:
        c.handshake()
        with c.changed:
            assert c.changed.wait_for(lambda: CLOSE_NOTIFY in c.alerts(), 10)
        c.sock.sendall(c.app(late))
        if then == "close":
            c.sock.sendall(c.alert(WARNING, 0))
            c.sock.shutdown(socket.SHUT_WR)
            c.eof.wait(10)
        elif then == "rst":
            rst(c)
        else:
            c.server.stall()

    with Server(script, emulator) as server:
        ssl_open(host, 7, mode=mode)
        assert open_answer(host, 7) == 0
        host.write("AT+QSSLCLOSE=7,5\r")
        wait_for(lambda: server.conns and CLOSE_NOTIFY in server.conns[0].alerts(), 5, "close_notify out")
        conn = server.conns[0]
        if then == "hold":
            assert host.quiet_for(0.3) == b""            # waits for the server's close
            advance(5)
        assert host.read_until(re.compile(rb"\r\n(OK|ERROR)\r\n"), timeout=5) == b"\r\nOK\r\n"
        assert host.quiet_for(0.3) == b""
        assert host.at("AT+QSSLSTATE=7") == b"\r\nOK\r\n"
        wait_for(lambda: tcp_fds_to(server.port) == 0, 5, "the connection gone")
        assert [p for ct, p in conn.records if ct == CT_APP] == []
        assert b"QSSLURC" not in bytes(host.transcript)
    usable_again(host, emulator, 7)


# == an RST between AT+QSSLSEND's line and its data ============================================
@pytest.mark.parametrize("mode", [0, 1], ids=["buffer", "push"])
def test_rst_while_the_host_is_at_the_send_prompt(modem, emulator, mode):
    """Data arrived and were reported; the host is at "> " when the server sends 300 more bytes
    and resets.  Nothing inside the prompt; the host's bytes: ERROR (QIGETERROR 567), none of
    them sent; then the 300 bytes ("recv" URC or pushed) and one "closed"; every byte once."""
    host, advance, port = modem
    first, second = pattern(500, 1), pattern(300, 2)
    go, sent = threading.Event(), threading.Event()

    def script(c: Conn) -> None:
        c.handshake()
        c.sock.sendall(c.app(first))
        go.wait(10)
        c.sock.sendall(c.app(second))
        sent.set()
        c.server.release.wait(10)              # reset once the emulator holds the bytes
        rst(c)

    with Server(script, emulator) as server:
        ssl_open(host, 9, mode=mode)
        assert open_answer(host, 9) == 0
        if mode == 0:
            host.seen(b'+QSSLURC: "recv",9\r\n')
            assert read_all(host, 9, len(first)) == first
        else:
            assert read_pushed(host, 9, len(first)) == first
        write_bytewise(host, b"AT+QSSLSEND=9,10\r")
        assert host.read_until(re.compile(rb"> |ERROR\r\n")) == b"\r\n> "
        go.set()
        assert sent.wait(5)
        wait_for(lambda: inbox_len(emulator, port, 9) == len(second), 5, "the 300 bytes in")
        server.release.set()
        wait_for(lambda: peer_gone(emulator, port, 9), 5, "the RST seen")
        assert host.quiet_for(0.2) == b""
        host.write(b"0123456789")
        recv_urc = (b'\r\n+QSSLURC: "recv",9\r\n' if mode == 0
                    else b'\r\n+QSSLURC: "recv",9,300\r\n' + second + b"\r\n")
        want = b"\r\nERROR\r\n" + recv_urc + b'\r\n+QSSLURC: "closed",9\r\n'
        got = host.read_until(b'+QSSLURC: "closed",9\r\n', timeout=5)
        assert got == want, got
        assert qigeterror(host) == 567
        if mode == 0:
            assert read_all(host, 9, len(second), sizes=(7, 1500)) == second
            assert recv(host, 9) == b""
        assert state(host, 9) == 4
        assert server.conns[0].plaintext() == b""
        assert host.at("AT+QSSLCLOSE=9") == b"\r\nOK\r\n"
        assert host.quiet_for(0.1) == b""
    usable_again(host, emulator, 9)


def test_ml302_rst_while_the_host_is_at_the_send_prompt(ml, emulator):
    """ML302: "> " out (AT+QSSLSEND=1 typed a byte at a time), the server sends 200 bytes and
    resets: nothing inside the prompt; the data and Ctrl+Z: ERROR; then "recv" and "close"
    once each; the 200 bytes readable; REMOTE CLOSING until AT+QSSLCLOSE."""
    host, advance, port = ml
    data = pattern(200, 4)
    go = threading.Event()

    def script(c: Conn) -> None:
        c.handshake(seal=False)
        go.wait(10)
        c.sock.sendall(c.ossl_app(data))
        c.server.release.wait(10)
        c.rst()

    with Server(script, emulator, suites="ALL:@SECLEVEL=0") as server:
        assert host.at(f'AT+QSSLOPEN=1,0,"{NAME}",443,0') == b"\r\nOK\r\n"
        host.seen(b"+QSSLOPEN: 1,0\r\n")
        write_bytewise(host, b"AT+QSSLSEND=1\r")
        assert host.read_until(re.compile(rb"> |ERROR\r\n")) == b"\r\n> "
        go.set()
        wait_for(lambda: inbox_len(emulator, port, 1) == len(data), 5, "the 200 bytes in")
        server.release.set()
        wait_for(lambda: peer_gone(emulator, port, 1), 5, "the RST seen")
        assert host.quiet_for(0.2) == b""
        host.write(b"too late\x1a")
        got = host.read_until(b'+QSSLURC: "close",1\r\n', timeout=5)
        assert got == b'\r\nERROR\r\n\r\n+QSSLURC: "recv",1,1\r\n\r\n+QSSLURC: "close",1\r\n', got
        assert ml302_recv(host, 1, 150) + ml302_recv(host, 1, 150) == data
        assert ml302_recv(host, 1, 150) == b""
        assert re.search(rb'\+QSSLSTATE: 1,"TCP","[0-9.]+",443,"REMOTE CLOSING",1\r\n', host.at("AT+QSSLSTATE"))
        ml302_close(host, 1)
        assert host.quiet_for(0.1) == b""
    assert host.at("AT") == b"\r\nOK\r\n"
