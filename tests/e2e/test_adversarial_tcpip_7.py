"""A seventh adversarial pass over the EC2x TCP/IP commands (AT+QIOPEN & co.), aimed at what
test_tcpip.py, test_adversarial_tcpip*.py, test_review_tcpip_*.py and
test_adversarial_hostile_peers_tcpip.py leave out (docs/behaviour.md "TCP/UDP sockets (EC2x)";
the BG96/BG95 TCP/IP application notes' formats):

* AT+QICLOSE=<id>,<timeout> of a socket whose peer never acknowledges (a blackholed link, the
  control API's drop fault): nothing before <timeout>, OK then, the id free and a new open on
  it counting from 0; the same inside a command line (the rest of the line after the linger,
  one final OK); a blackholed TCP INCOMING: the client never gets what SEND OK took; a peer
  whose window stays shut: OK at <timeout>, the peer left holding exactly the acknowledged
  bytes; the network deactivating the context ends a linger at once, for a blackholed socket
  too (the blackhole hides the peer's end, not the modem's own);
* a peer whose data and FIN come in ONE segment (TCP_CORK), in push mode (the data URC, its
  data, then "closed") and in buffer mode after traffic both ways (the counters of AT+QISEND=
  <id>,0 and AT+QIRD=<id>,0, the data readable after "closed", AT+QISEND 567); the host leaving
  in a '>' prompt while its push incoming gets data + FIN (the next host: the push, "closed",
  the counters);
* a push listener whose incoming takes the last free id (11) with data + FIN in one segment,
  the next client "incoming full", the id freed by AT+QICLOSE and taken again;
* a UDP SERVICE datagram longer than AT+QIRD's maximum, read with hex data and viewmode 1: the
  rest of the datagram with its own sender, then the next sender's datagram; in push mode a
  4000-byte datagram pushed whole (in pieces, each naming the sender);
* the counters of a transparent socket carried to buffer mode (AT+QISWTMD) after "+++";
* a host that writes one byte at a time with CR LF and reads in odd-sized chunks, driving a
  push listener's incoming (data that look like answers and URCs, then FIN) and a UDP SERVICE.

Every test runs on ec2x_strict (manual clock, no ERROR log record, no traceback) and reaches
only 127.0.0.1."""
from __future__ import annotations

import re
import socket
import time

import pytest

from emulator.testing.host import Host
from tests.e2e.socket_support import (TCP_HOST, TCP_PORT, UDP_HOST, UDP_PORT, acks_settled, error_code, escape,
                                      free_port, qiopen, qisend, udp_peer, wait_for)
from tests.e2e.test_adversarial_blind_spots import BytewiseOddHost

OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"
SEND_OK = b"\r\nSEND OK\r\n"


@pytest.fixture
def modem(ec2x_strict):
    return ec2x_strict


def corked_send_and_fin(conn: socket.socket, data: bytes) -> None:
    """data and the FIN in one segment: TCP_CORK holds the data until the FIN joins them."""
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
    conn.sendall(data)
    conn.shutdown(socket.SHUT_WR)


def incoming_line(host) -> bytes:
    return host.read_until(b'"incoming"') + host.read_until(b"\r\n")


# -- AT+QICLOSE while the peer never acknowledges ----------------------------------------------
def test_qiclose_of_a_blackholed_socket_waits_its_timeout_then_the_id_opens_afresh(modem, emulator, tcp_echo):
    host, advance, _ = modem
    qiopen(host, 0)
    assert emulator.control("drop", socket=0, how="blackhole")["ok"]
    assert qisend(host, 0, b"x" * 100) == SEND_OK
    assert host.at("AT+QISEND=0,0") == b"\r\n+QISEND: 100,0,100\r\n" + OK      # never acknowledged
    host.write("AT+QICLOSE=0,3\r")
    advance(2.5)
    assert host.quiet_for(0.3) == b""                    # the peer's FIN never comes: still lingering
    advance(0.7)
    assert host.read_until(OK, timeout=5) == OK          # <timeout> ran out: closed anyway, OK
    assert host.at("AT+QISTATE") == OK
    qiopen(host, 0)                                      # the id is free; a new connection counts from 0
    assert host.at("AT+QISEND=0,0") == b"\r\n+QISEND: 0,0,0\r\n" + OK
    assert qisend(host, 0, b"again") == SEND_OK
    assert host.read_until(b'+QIURC: "recv",0\r\n') == b'\r\n+QIURC: "recv",0\r\n'
    assert host.at("AT+QIRD=0") == b"\r\n+QIRD: 5\r\nagain\r\n" + OK
    assert host.at("AT+QICLOSE=0,0") == OK


def test_qiclose_linger_inside_a_command_line_runs_the_rest_after_it(modem, emulator, tcp_echo):
    host, advance, _ = modem
    qiopen(host, 0)
    qiopen(host, 1)
    assert emulator.control("drop", socket=0, how="blackhole")["ok"]
    assert qisend(host, 0, b"lost in the dark") == SEND_OK
    host.write("AT+QICLOSE=0,2;+QISTATE;+QISEND=1,0;+QIGETERROR\r")
    advance(1.5)
    assert host.quiet_for(0.3) == b""                    # nothing of the line before the close ends
    advance(0.7)
    answer = host.read_until(OK, timeout=5)
    assert re.fullmatch(rb'\r\n\+QISTATE: 1,"TCP","[\d.]+",7000,\d+,2,1,1,0,"usbmodem"\r\n'
                        rb'\r\n\+QISEND: 0,0,0\r\n\r\n\+QIGETERROR: 0,operate successfully\r\n\r\nOK\r\n',
                        answer), answer
    assert host.quiet_for(0.2) == b""
    assert host.at("AT+QICLOSE=1,0") == OK


def test_qiclose_of_a_blackholed_incoming_waits_and_its_client_never_gets_the_data(modem, emulator):
    host, advance, _ = modem
    lport = free_port()
    qiopen(host, 5, "TCP LISTENER", "127.0.0.1", 0, local_port=lport)
    client = socket.create_connection(("127.0.0.1", lport))
    try:
        cport = client.getsockname()[1]
        assert incoming_line(host) == f'\r\n+QIURC: "incoming",0,5,"127.0.0.1",{cport}\r\n'.encode()
        assert emulator.control("drop", socket=0, how="blackhole")["ok"]
        assert qisend(host, 0, b"abc") == SEND_OK
        assert host.at("AT+QISEND=0,0") == b"\r\n+QISEND: 3,0,3\r\n" + OK
        host.write("AT+QICLOSE=0,2\r")
        advance(1.5)
        assert host.quiet_for(0.3) == b""
        advance(0.7)
        assert host.read_until(OK, timeout=5) == OK
        assert host.at("AT+QISTATE") == \
            f'\r\n+QISTATE: 5,"TCP LISTENER","127.0.0.1",0,{lport},3,1,5,0,"usbmodem"\r\n'.encode() + OK
        client.settimeout(2)
        try:
            got = client.recv(100)
        except ConnectionResetError:
            got = b""
        assert got == b""                                # the blackholed bytes never arrived
    finally:
        client.close()
    assert host.at("AT+QICLOSE=5") == OK


def test_qiclose_of_a_zero_window_peer_resets_it_holding_the_acked_prefix(modem, peer_factory):
    """A peer that stops reading: its window shuts, AT+QISEND=<id>,0 shows what it acknowledged;
    AT+QICLOSE=0,2 cannot get its FIN through, answers OK when <timeout> runs out, and the peer
    then holds the acknowledged bytes, a prefix of the stream (the rest is dropped with the reset)."""
    host, advance, _ = modem
    peer = peer_factory(hold_reading=True, rcvbuf=4096)
    qiopen(host, 0)
    assert peer.accepted.wait(5)
    stream = b"".join(bytes([65 + i % 26]) * 1460 for i in range(40))
    for i in range(0, len(stream), 1460):
        assert qisend(host, 0, stream[i:i + 1460]) == SEND_OK
    held, sent, acked, unacked = acks_settled(host, peer.conn)
    assert sent == len(stream) and held == acked and unacked > 0
    host.write("AT+QICLOSE=0,2\r")
    advance(1.5)
    assert host.quiet_for(0.3) == b""
    advance(0.7)
    assert host.read_until(OK, timeout=5) == OK
    peer.release_reading()
    assert peer.eof.wait(5)
    got = bytes(peer.got)
    # The peer's kernel may still reopen its window during the linger (it compacts its queue)
    # and take a few more segments after the reading above: a prefix of at least the acked
    # bytes, never the whole stream (what it had not taken went with the reset).
    assert got == stream[:len(got)] and acked <= len(got) < len(stream)
    assert host.at("AT+QISTATE") == OK


def test_the_bearers_loss_ends_a_qiclose_linger_at_once(modem, emulator, peer_factory):
    """A peer that stays open: AT+QICLOSE=0,10 lingers; the network deactivating the context
    ends the linger at once (the connection is gone with it), the OK first, then the URC."""
    host, advance, _ = modem
    peer = peer_factory()
    qiopen(host, 0)
    assert peer.accepted.wait(5)
    host.write("AT+QICLOSE=0,10\r")
    advance(1)
    assert host.quiet_for(0.3) == b""
    assert emulator.control("pdp_deact", cid=1)["ok"]
    assert host.read_until(b'"pdpdeact",1\r\n', timeout=5) == b'\r\nOK\r\n\r\n+QIURC: "pdpdeact",1\r\n'
    assert host.at("AT+QISTATE") == OK


# Was a bug, fixed: the blackhole also hid the modem's own abort of the lingering socket
# (SslSocket._network_lost returned before it ended the linger): OK only after the full
# <timeout>.  SslSocket.abort now ends the linger itself.
def test_the_bearers_loss_ends_the_qiclose_linger_of_a_blackholed_socket_too(modem, emulator, peer_factory):
    """The blackhole hides the peer's FIN and RST, not the modem's own end of the connection:
    the bearer's loss drops the lingering socket (SocketService.pdp_lost aborts it) as it does
    a silent peer's (test above), so AT+QICLOSE answers then, not 9 s later."""
    host, advance, _ = modem
    peer = peer_factory()
    qiopen(host, 0)
    assert peer.accepted.wait(5)
    assert emulator.control("drop", socket=0, how="blackhole")["ok"]
    assert qisend(host, 0, b"x" * 10) == SEND_OK
    host.write("AT+QICLOSE=0,10\r")
    advance(1)
    assert host.quiet_for(0.3) == b""
    assert emulator.control("pdp_deact", cid=1)["ok"]
    got = host.quiet_for(0.5)
    late = b""
    if not got:
        advance(9.5)                                     # (what it does instead: the whole linger)
        late = host.quiet_for(0.3)                       # OK, "pdpdeact" (no "closed": it was closed)
    assert got == b'\r\nOK\r\n\r\n+QIURC: "pdpdeact",1\r\n', (got, late)
    assert host.at("AT+QISTATE") == OK


def test_the_bearers_loss_ends_the_qsslclose_linger_of_a_blackholed_ssl_socket(modem, emulator, echo):
    """The same for AT+QSSLCLOSE (its close_notify never acknowledged on the blackholed link)."""
    host, advance, _ = modem
    assert host.at('AT+QSSLOPEN=1,1,0,"echo.example",443,0') == OK
    assert host.read_until(b"+QSSLOPEN: 0,0\r\n", timeout=10).endswith(b"+QSSLOPEN: 0,0\r\n")
    assert emulator.control("drop", socket=0, how="blackhole")["ok"]
    host.write("AT+QSSLCLOSE=0,10\r")
    advance(1)
    assert host.quiet_for(0.3) == b""
    assert emulator.control("pdp_deact", cid=1)["ok"]
    assert host.quiet_for(0.5) == b'\r\nOK\r\n\r\n+QIURC: "pdpdeact",1\r\n'
    assert host.at("AT+QSSLSTATE") == OK


# -- data and FIN in one segment ---------------------------------------------------------------
def test_push_mode_data_and_fin_in_one_segment_data_first_then_closed(modem, peer_factory):
    host, _, _ = modem
    peer = peer_factory()
    qiopen(host, 0, mode=1)
    assert peer.accepted.wait(5)
    corked_send_and_fin(peer.conn, b"tail-data")
    assert host.read_until(b'+QIURC: "closed",0\r\n') == \
        b'\r\n+QIURC: "recv",0,9\r\ntail-data\r\n\r\n+QIURC: "closed",0\r\n'
    assert re.fullmatch(rb'\r\n\+QISTATE: 0,"TCP","[\d.]+",7000,\d+,4,1,0,1,"usbmodem"\r\n\r\nOK\r\n',
                        host.at("AT+QISTATE=1,0"))
    assert host.at("AT+QISEND=0,0;+QIRD=0,0") == b"\r\n+QISEND: 0,0,0\r\n\r\n+QIRD: 9,9,0\r\n" + OK
    assert host.at("AT+QISEND=0,1") == ERROR
    assert error_code(host) == 567
    assert host.at("AT+QICLOSE=0") == OK
    assert host.quiet_for(0.2) == b""


def test_buffer_mode_data_and_fin_in_one_segment_after_traffic_both_ways(modem, peer_factory):
    host, _, _ = modem
    peer = peer_factory()
    qiopen(host, 0)
    assert peer.accepted.wait(5)
    assert qisend(host, 0, b"ping") == SEND_OK
    deadline = time.monotonic() + 5
    while bytes(peer.got) != b"ping" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert bytes(peer.got) == b"ping"
    corked_send_and_fin(peer.conn, b"pong+bye")
    assert host.read_until(b'+QIURC: "closed",0\r\n') == b'\r\n+QIURC: "recv",0\r\n\r\n+QIURC: "closed",0\r\n'
    assert re.fullmatch(rb'\r\n\+QISEND: 4,4,0\r\n\r\n\+QIRD: 8,0,8\r\n\r\n'
                        rb'\+QISTATE: 0,"TCP","[\d.]+",7000,\d+,4,1,0,0,"usbmodem"\r\n\r\nOK\r\n',
                        host.at("AT+QISEND=0,0;+QIRD=0,0;+QISTATE=1,0"))
    assert host.at("AT+QISEND=0,1") == ERROR
    assert error_code(host) == 567
    assert host.at("AT+QIRD=0,4") == b"\r\n+QIRD: 4\r\npong\r\n" + OK    # after "closed": still readable
    assert host.at("AT+QIRD=0") == b"\r\n+QIRD: 4\r\n+bye\r\n" + OK
    assert host.at("AT+QIRD=0") == b"\r\n+QIRD: 0\r\n" + OK
    assert host.at("AT+QIRD=0,0") == b"\r\n+QIRD: 8,8,0\r\n" + OK
    assert host.at("AT+QICLOSE=0") == OK
    assert bytes(peer.got) == b"ping"


def test_port_closed_in_a_prompt_while_a_push_incoming_gets_data_and_fin(modem):
    """The host leaves in AT+QISEND's data while its push incoming's client sends data and FIN
    in one segment: nothing is sent, the next host gets the push and "closed" in order, and the
    counters agree (what was pushed counts as read)."""
    host, _, port = modem
    lport = free_port()
    qiopen(host, 4, "TCP LISTENER", "127.0.0.1", 0, local_port=lport, mode=1)
    client = socket.create_connection(("127.0.0.1", lport))
    cport = client.getsockname()[1]
    assert incoming_line(host) == f'\r\n+QIURC: "incoming",0,4,"127.0.0.1",{cport}\r\n'.encode()
    host.write("AT+QISEND=0,10\r")
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(b"half!")
    corked_send_and_fin(client, b"while-away")
    time.sleep(0.2)
    host.close()
    wait_for(lambda: not port.port.attached, what="the modem saw the hang-up")
    host = Host(port.path)
    try:
        assert host.read_until(b'"closed",0\r\n') == \
            b'\r\n+QIURC: "recv",0,10\r\nwhile-away\r\n\r\n+QIURC: "closed",0\r\n'
        assert host.at("AT").endswith(OK)
        assert host.at("AT+QISTATE=1,0;+QIRD=0,0;+QISEND=0,0") == \
            (f'\r\n+QISTATE: 0,"TCP INCOMING","127.0.0.1",{cport},{lport},4,1,4,1,"usbmodem"\r\n'
             f'\r\n+QIRD: 10,10,0\r\n\r\n+QISEND: 0,0,0\r\n').encode() + OK
        client.settimeout(5)
        assert client.recv(100) == b""                   # not a byte of the abandoned send
        assert host.at("AT+QICLOSE=0;+QICLOSE=4") == OK
        assert host.at("AT+QISTATE") == OK
    finally:
        host.close()
        client.close()


# -- the last free id ----------------------------------------------------------------------------
def test_push_incoming_on_the_last_free_id_with_data_and_fin_then_incoming_full(modem, udp_echo):
    host, _, _ = modem
    lport = free_port()
    qiopen(host, 0, "TCP LISTENER", "127.0.0.1", 0, local_port=lport, mode=1)
    for i in range(1, 11):
        qiopen(host, i, "UDP", UDP_HOST, UDP_PORT)
    first = socket.create_connection(("127.0.0.1", lport))
    second = third = None
    try:
        assert incoming_line(host) == \
            f'\r\n+QIURC: "incoming",11,0,"127.0.0.1",{first.getsockname()[1]}\r\n'.encode()
        second = socket.create_connection(("127.0.0.1", lport))
        assert host.read_until(b'full"\r\n') == b'\r\n+QIURC: "incoming full"\r\n'
        second.settimeout(5)
        try:
            assert second.recv(10) == b""                # dropped, no data
        except ConnectionResetError:
            pass
        corked_send_and_fin(first, b"last-id\r\nOK\r\n")
        assert host.read_until(b'+QIURC: "closed",11\r\n') == \
            b'\r\n+QIURC: "recv",11,13\r\nlast-id\r\nOK\r\n\r\n\r\n+QIURC: "closed",11\r\n'
        assert host.at("AT+QISTATE=1,11") == \
            (f'\r\n+QISTATE: 11,"TCP INCOMING","127.0.0.1",{first.getsockname()[1]},{lport},4,1,0,1,'
             f'"usbmodem"\r\n').encode() + OK
        assert host.quiet_for(0.2) == b""                # nothing about the refused one
        assert host.at("AT+QICLOSE=11") == OK
        third = socket.create_connection(("127.0.0.1", lport))
        assert incoming_line(host) == \
            f'\r\n+QIURC: "incoming",11,0,"127.0.0.1",{third.getsockname()[1]}\r\n'.encode()
        third.sendall(b"x")
        assert host.read_until(b"x\r\n") == b'\r\n+QIURC: "recv",11,1\r\nx\r\n'
    finally:
        for c in (first, second, third):
            if c is not None:
                c.close()
    assert host.read_until(b'+QIURC: "closed",11\r\n') == b'\r\n+QIURC: "closed",11\r\n'
    assert host.at("AT+QICLOSE=11;+QICLOSE=0") == OK


# -- UDP datagrams longer than a read ----------------------------------------------------------
def test_udp_service_long_datagram_read_as_hex_on_one_line_keeps_its_sender(modem):
    host, _, _ = modem
    assert host.at('AT+QICFG="dataformat",0,1;+QICFG="viewmode",1') == OK
    lport = free_port(socket.SOCK_DGRAM)
    qiopen(host, 3, "UDP SERVICE", "127.0.0.1", 0, local_port=lport)
    p, q = udp_peer(), udp_peer()
    try:
        big = bytes(range(256)) * 6 + bytes(66)          # 1602 bytes: more than one read takes
        p.sendto(big, ("127.0.0.1", lport))
        assert host.read_until(b'+QIURC: "recv",3\r\n') == b'\r\n+QIURC: "recv",3\r\n'
        q.sendto(b"\x00q", ("127.0.0.1", lport))
        pport, qport = p.getsockname()[1], q.getsockname()[1]
        wait_for(lambda: host.at("AT+QIRD=3,0") == b"\r\n+QIRD: 1604,0,1604\r\n" + OK, what="both datagrams in")
        assert host.at("AT+QIRD=3") == \
            f'\r\n+QIRD: 1500,"127.0.0.1",{pport},'.encode() + big[:1500].hex().encode() + b"\r\n" + OK
        assert host.at("AT+QIRD=3,0") == b"\r\n+QIRD: 1604,1500,104\r\n" + OK
        assert host.at("AT+QIRD=3") == \
            f'\r\n+QIRD: 102,"127.0.0.1",{pport},'.encode() + big[1500:].hex().encode() + b"\r\n" + OK
        assert host.at("AT+QIRD=3") == f'\r\n+QIRD: 2,"127.0.0.1",{qport},0071\r\n'.encode() + OK
        assert host.at("AT+QIRD=3") == b"\r\n+QIRD: 0\r\n" + OK
        assert host.at("AT+QIRD=3,0") == b"\r\n+QIRD: 1604,1604,0\r\n" + OK
    finally:
        p.close()
        q.close()
    assert host.at("AT+QICLOSE=3") == OK


def test_udp_service_push_of_a_4000_byte_datagram_names_the_sender_on_each_piece(modem):
    host, _, _ = modem
    lport = free_port(socket.SOCK_DGRAM)
    qiopen(host, 0, "UDP SERVICE", "127.0.0.1", 0, local_port=lport, mode=1)
    p = udp_peer()
    try:
        data = b"".join(b"%05d" % i for i in range(800))   # 4000 bytes
        p.sendto(data, ("127.0.0.1", lport))
        pport = p.getsockname()[1]
        got = bytearray()
        head = re.compile(rb'\r\n\+QIURC: "recv",0,(\d+),"127\.0\.0\.1",(\d+)\r\n')
        while len(got) < len(data):
            line = host.read_until(head, timeout=5)
            m = head.fullmatch(line)
            assert m, line
            assert int(m.group(2)) == pport
            n = int(m.group(1))
            assert 0 < n <= 1500
            got += host.read_exactly(n, timeout=5)
            assert host.read_exactly(2, timeout=5) == b"\r\n"
        assert bytes(got) == data
        assert host.quiet_for(0.2) == b""
        assert host.at("AT+QIRD=0,0") == b"\r\n+QIRD: 4000,4000,0\r\n" + OK
    finally:
        p.close()
    assert host.at("AT+QICLOSE=0") == OK


# -- counters across access modes ---------------------------------------------------------------
def test_transparent_traffic_counts_and_buffer_mode_counts_on_after_qiswtmd(modem, tcp_echo):
    host, advance, _ = modem
    assert host.at(f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,2') == b"\r\nCONNECT\r\n"
    host.write(b"abc")
    advance(0.3)                                         # transwaittm 2: the packet goes after 200 ms
    assert host.read_exactly(3, timeout=5) == b"abc"
    assert escape(host, advance) == OK
    assert host.at("AT+QISEND=0,0;+QIRD=0,0") == b"\r\n+QISEND: 3,3,0\r\n\r\n+QIRD: 3,3,0\r\n" + OK
    assert host.at("AT+QISWTMD=0,0") == OK
    assert qisend(host, 0, b"xy") == SEND_OK
    assert host.read_until(b'+QIURC: "recv",0\r\n') == b'\r\n+QIURC: "recv",0\r\n'
    assert host.at("AT+QIRD=0,0") == b"\r\n+QIRD: 5,3,2\r\n" + OK
    assert host.at("AT+QIRD=0") == b"\r\n+QIRD: 2\r\nxy\r\n" + OK
    assert host.at("AT+QISEND=0,0") == b"\r\n+QISEND: 5,5,0\r\n" + OK
    assert host.at("AT+QICLOSE=0,0") == OK


# -- a byte-at-a-time CR LF host reading in odd chunks -------------------------------------------
def test_bytewise_odd_reading_host_drives_a_push_incoming_and_a_udp_service(modem):
    first, _, port = modem
    first.close()
    time.sleep(0.05)
    host = BytewiseOddHost(first.path)
    try:
        for _ in range(50):
            if host.at("AT").endswith(OK):
                break
        lport = free_port()
        uport = free_port(socket.SOCK_DGRAM)
        assert host.at(f'AT+QIOPEN=1,4,"TCP LISTENER","127.0.0.1",0,{lport},1') == OK
        assert host.read_until(b"+QIOPEN: 4,0\r\n") == b"\r\n+QIOPEN: 4,0\r\n"
        assert host.at(f'AT+QIOPEN=1,7,"UDP SERVICE","127.0.0.1",0,{uport},0') == OK
        assert host.read_until(b"+QIOPEN: 7,0\r\n") == b"\r\n+QIOPEN: 7,0\r\n"
        client = socket.create_connection(("127.0.0.1", lport))
        peer = udp_peer()
        try:
            assert incoming_line(host) == \
                f'\r\n+QIURC: "incoming",0,4,"127.0.0.1",{client.getsockname()[1]}\r\n'.encode()
            # the host types a send to the UDP SERVICE's peer, one byte a write
            payload = b"\nOK\r\n> \x1a"
            host.write(f'AT+QISEND=7,{len(payload)},"127.0.0.1",{peer.getsockname()[1]}\r\n')
            assert host.read_until(b"> ") == b"\r\n> "
            host.write(payload)
            assert host.read_until(SEND_OK) == SEND_OK
            assert peer.recvfrom(100) == (payload, ("127.0.0.1", uport))
            fake = b'+QIURC: "closed",7\r\n'
            peer.sendto(fake, ("127.0.0.1", uport))
            assert host.read_until(b'+QIURC: "recv",7\r\n') == b'\r\n+QIURC: "recv",7\r\n'
            assert host.at("AT+QIRD=7") == \
                f'\r\n+QIRD: {len(fake)},"127.0.0.1",{peer.getsockname()[1]}\r\n'.encode() + fake + b"\r\n" + OK
            # the incoming's client: words the host parses for, then its FIN, in one segment
            words = b'\r\n+QIURC: "closed",0\r\nSEND OK\r\n'
            corked_send_and_fin(client, words)
            assert host.read_until(b'SEND OK\r\n\r\n\r\n+QIURC: "closed",0\r\n') == \
                b'\r\n+QIURC: "recv",0,%d\r\n' % len(words) + words + b'\r\n\r\n+QIURC: "closed",0\r\n'
            assert host.at("AT+QICLOSE=0;+QICLOSE=4;+QICLOSE=7") == OK
            assert host.at("AT+QISTATE") == OK
        finally:
            client.close()
            peer.close()
    finally:
        host.close()
