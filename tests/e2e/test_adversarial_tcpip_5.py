"""A fifth adversarial pass over the EC2x TCP/IP commands (AT+QIOPEN & co.), aimed at what
test_tcpip.py, test_adversarial_tcpip*.py, test_adversarial_hostile_peers_tcpip.py and
test_review_tcpip_*.py leave out (docs/behaviour.md "TCP/UDP sockets (EC2x)", "DNS, ping,
NTP", "Transparent access mode"; the BG96/BG95 TCP/IP notes' formats):

* a fixed-length AT+QISEND typed one byte a write, its data Ctrl+Z, ESC, CR, LF and "+":
  all data, nothing more taken, the counters of AT+QISEND=<id>,0;
* a variable-length AT+QISEND cancelled with ESC (571) or ended by a lone Ctrl+Z (552):
  nothing reaches the server, the counters stay;
* hex send (AT+QICFG="dataformat",1,0): echo of the digits with ATE1, ESC, odd digits,
  mixed case; the counters count bytes;
* hex receive, viewmode and recvind together on a TCP client, a peer FIN with data waiting:
  "recv" then "closed", state 4, what waited still read, AT+QIRD=<id>,0 totals, 567;
* a "UDP" client with recvind/viewmode: the URC's length, a datagram read in two parts,
  the totals of AT+QIRD=<id>,0 and AT+QISEND=<id>,0;
* a UDP SERVICE with a part-read datagram switched to push: the rest with its own sender,
  then the next sender's, data in hex not converted when pushed;
* every data command on a TCP LISTENER's id (572), AT+QSSLOPEN on it (563), two listeners /
  two UDP SERVICEs on one port (556) while a listener and a UDP SERVICE share a number;
* a push listener's TCP INCOMING: AT+QIRD 572, data pushed after SEND OK when they came in
  the prompt, AT+QICLOSE's FIN, the id reused, AT+QISWTMD to transparent mode and the
  client's close (NO CARRIER, state 4 mode 2, ATO NO CARRIER);
* an incoming connection while AT+QICLOSE lingers on the lowest id: it gets that id after the
  close's OK and the lingering close does not touch it;
* transparent TCP after "+++": AT+QISEND still sends, the echo waits (AT+QIRD 572, the
  count query works), ATO gives it first;
* hex both ways on a "UDP" client with AT+QISDE=0 and ATE1: lines echoed, data never;
* AT+QIDEACT of one of two contexts: "closed" for its client, listener and incoming only;
* a restart: the listener's client cut, no URC, settings back to defaults, ports free again;
* AT+QIDNSGIP / AT+QISTATE / AT+QPING agree on a routed name's address, and a driver that
  resolves with AT+QIDNSGIP and opens the address it got reaches the routed server (BUG);
  a name with a --dns entry whose address is routed is dialled there (BUG);
* a module <local_port> mapped to "any free port" (add_listen(..., 0)) is still one port:
  a second listener / UDP SERVICE on it is 556 (BUG).

Every test runs on ec2x_strict (manual clock, no ERROR log record, no traceback) and
reaches only 127.0.0.1."""
from __future__ import annotations

import re
import socket
import time

import pytest

from tests.e2e.socket_support import (RESULT, TCP_HOST, TCP_PORT, UDP_HOST, UDP_PORT, error_code, free_port,
                                      qiopen, qisend, wait_for)

OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"
ONLINE_END = re.compile(rb"\r\n(OK|ERROR|NO CARRIER)\r\n")


@pytest.fixture
def modem(ec2x_strict):
    return ec2x_strict


def prompt(host, line: str) -> None:
    host.write(line + "\r")
    assert host.read_until(re.compile(rb"> |\r\nERROR\r\n")) == b"\r\n> "


def counters(host, connect_id: int, want: bytes) -> None:
    """AT+QISEND=<id>,0 reaches `want` (acked follows the peer's ACK a loopback trip later)."""
    wait_for(lambda: host.at(f"AT+QISEND={connect_id},0") == b"\r\n+QISEND: " + want + b"\r\n" + OK,
             timeout=5, what=f"+QISEND: {want!r}")


def escape(host, advance) -> bytes:
    advance(1.1)
    host.write(b"+++")
    advance(1.1)
    return host.read_until(ONLINE_END)


def udp_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(5)
    return s


# -- AT+QISEND data phase -------------------------------------------------------------------
def test_fixed_length_send_typed_a_byte_a_write_takes_control_bytes_as_data(modem, peer_factory):
    host, _, _ = modem
    peer = peer_factory()
    qiopen(host, 0)
    prompt(host, "AT+QISEND=0,6")
    for b in b"\x1a\x1b\r\n+a":
        host.write(bytes([b]))
    assert host.read_until(RESULT) == b"\r\nSEND OK\r\n"
    wait_for(lambda: bytes(peer.got) == b"\x1a\x1b\r\n+a", timeout=5, what="six bytes at the server")
    counters(host, 0, b"6,6,0")
    # exactly six were taken: the next line is a command again
    assert host.at("AT") == OK
    prompt(host, "AT+QISEND=0,1")
    host.write(b"Z")
    assert host.read_until(RESULT) == b"\r\nSEND OK\r\n"
    counters(host, 0, b"7,7,0")
    assert bytes(peer.got) == b"\x1a\x1b\r\n+aZ"


def test_variable_length_send_cancelled_or_empty_sends_nothing(modem, peer_factory):
    host, _, _ = modem
    peer = peer_factory()
    qiopen(host, 0)
    prompt(host, "AT+QISEND=0")
    host.write(b"abc\x1b")
    assert host.read_until(RESULT) == ERROR
    assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 571,cancel send\r\n" + OK
    prompt(host, "AT+QISEND=0")
    host.write(b"\x1a")
    assert host.read_until(RESULT) == ERROR
    assert error_code(host) == 552
    assert host.at("AT+QISEND=0,0") == b"\r\n+QISEND: 0,0,0\r\n" + OK
    time.sleep(0.3)
    assert bytes(peer.got) == b""
    prompt(host, "AT+QISEND=0")
    host.write(b"kept\x1a")
    assert host.read_until(RESULT) == b"\r\nSEND OK\r\n"
    wait_for(lambda: bytes(peer.got) == b"kept", timeout=5, what="the one send that went")
    counters(host, 0, b"4,4,0")


def test_hex_send_echo_cancel_odd_digits_and_mixed_case(modem, peer_factory):
    host, _, _ = modem
    peer = peer_factory()
    qiopen(host, 0)
    assert host.at('AT+QICFG="dataformat",1,0') == OK
    assert host.at("ATE1") == OK
    host.write("AT+QISEND=0,2\r")
    assert host.read_until(b"> ") == b"AT+QISEND=0,2\r\r\n> "
    for b in b"414":
        host.write(bytes([b]))
    assert host.quiet_for(0.3) == b"414"                  # echoed as typed, no answer yet
    host.write(b"2")
    assert host.read_until(RESULT) == b"2\r\nSEND OK\r\n"
    assert host.at("ATE0") == b"ATE0\r" + OK
    prompt(host, "AT+QISEND=0")
    host.write(b"41\x1b")
    assert host.read_until(RESULT) == ERROR
    assert error_code(host) == 571
    prompt(host, "AT+QISEND=0")
    host.write(b"414\x1a")
    assert host.read_until(RESULT) == ERROR
    assert error_code(host) == 552
    prompt(host, "AT+QISEND=0")
    host.write(b"4a4B0d0A\x1a")
    assert host.read_until(RESULT) == b"\r\nSEND OK\r\n"
    wait_for(lambda: bytes(peer.got) == b"ABJK\r\n", timeout=5, what="the decoded bytes")
    counters(host, 0, b"6,6,0")                           # bytes, not digits


# -- receiving: formats and counters ----------------------------------------------------------
def test_hex_viewmode_recvind_reads_and_a_fin_with_data_waiting(modem, peer_factory):
    host, _, _ = modem
    peer = peer_factory()
    qiopen(host, 0)
    assert host.at('AT+QICFG="dataformat",0,1') == OK
    peer.send(b"xyz")
    assert host.read_until(b'+QIURC: "recv",0\r\n') == b'\r\n+QIURC: "recv",0\r\n'
    assert host.at("AT+QIRD=0,2") == b"\r\n+QIRD: 2\r\n7879\r\n" + OK     # length in bytes
    assert host.at("AT+QIRD=0,0") == b"\r\n+QIRD: 3,2,1\r\n" + OK
    assert host.at('AT+QICFG="viewmode",1') == OK
    assert host.at("AT+QIRD=0") == b"\r\n+QIRD: 1,7a\r\n" + OK
    assert host.at("AT+QIRD=0") == b"\r\n+QIRD: 0\r\n" + OK
    assert host.at('AT+QICFG="recvind",1') == OK
    peer.send(b"12345")
    assert host.read_until(b'+QIURC: "recv",0,5\r\n') == b'\r\n+QIURC: "recv",0,5\r\n'
    peer.shutdown_wr()
    assert host.read_until(b'+QIURC: "closed",0\r\n') == b'\r\n+QIURC: "closed",0\r\n'
    assert re.fullmatch(rb'\r\n\+QISTATE: 0,"TCP","[\d.]+",7000,\d+,4,1,0,0,"usbmodem"\r\n\r\nOK\r\n',
                        host.at("AT+QISTATE=1,0"))
    assert host.at("AT+QIRD=0,0") == b"\r\n+QIRD: 8,3,5\r\n" + OK
    assert host.at("AT+QIRD=0") == b"\r\n+QIRD: 5,3132333435\r\n" + OK
    assert host.at("AT+QIRD=0,0") == b"\r\n+QIRD: 8,8,0\r\n" + OK
    assert host.at("AT+QISEND=0,1") == ERROR
    assert error_code(host) == 567
    assert host.at("AT+QICLOSE=0,0") == OK
    for line in ("AT+QIRD=0,0", "AT+QISEND=0,0", "AT+QIRD=0"):
        assert host.at(line) == ERROR, line
        assert error_code(host) == 572, line


def test_udp_client_recvind_viewmode_part_read_datagrams_and_counters(modem, emulator):
    host, _, _ = modem
    srv = udp_socket()
    emulator.router.add_map(UDP_HOST, UDP_PORT, "127.0.0.1", srv.getsockname()[1])
    assert host.at('AT+QICFG="recvind",1') == OK
    qiopen(host, 1, "UDP", UDP_HOST, UDP_PORT)
    assert qisend(host, 1, b"x" * 1460) == b"\r\nSEND OK\r\n"
    data, addr = srv.recvfrom(4096)
    assert data == b"x" * 1460                            # one datagram, whole
    assert qisend(host, 1, b"\x1a\x1b\x1a") == b"\r\nSEND OK\r\n"
    assert srv.recvfrom(4096)[0] == b"\x1a\x1b\x1a"
    assert host.at("AT+QISEND=1,0") == b"\r\n+QISEND: 1463,1463,0\r\n" + OK
    srv.sendto(b"abc", addr)
    assert host.read_until(b'+QIURC: "recv",1,3\r\n') == b'\r\n+QIURC: "recv",1,3\r\n'
    srv.sendto(b"defgh", addr)
    wait_for(lambda: host.at("AT+QIRD=1,0") == b"\r\n+QIRD: 8,0,8\r\n" + OK, timeout=5, what="both datagrams")
    assert host.at("AT+QIRD=1,2") == b"\r\n+QIRD: 2\r\nab\r\n" + OK
    assert host.at("AT+QIRD=1,0") == b"\r\n+QIRD: 8,2,6\r\n" + OK
    assert host.at("AT+QISWTMD=1,0") == OK                # the reminder carries what waits
    assert host.read_until(b'+QIURC: "recv",1,6\r\n') == b'\r\n+QIURC: "recv",1,6\r\n'
    assert host.at('AT+QICFG="viewmode",1') == OK
    assert host.at("AT+QIRD=1") == b"\r\n+QIRD: 1,c\r\n" + OK        # the rest of "abc" only
    assert host.at("AT+QIRD=1") == b"\r\n+QIRD: 5,defgh\r\n" + OK
    assert host.at("AT+QIRD=1") == b"\r\n+QIRD: 0\r\n" + OK
    assert host.at("AT+QIRD=1,0") == b"\r\n+QIRD: 8,8,0\r\n" + OK
    srv.close()


def test_udp_service_part_read_datagram_switched_to_push_keeps_each_sender(modem):
    host, _, _ = modem
    lport = free_port(socket.SOCK_DGRAM)
    qiopen(host, 2, "UDP SERVICE", "127.0.0.1", 0, local_port=lport)
    a, b, c = udp_socket(), udp_socket(), udp_socket()
    pa, pb = a.getsockname()[1], b.getsockname()[1]
    a.sendto(b"AAAA", ("127.0.0.1", lport))
    assert host.read_until(b'+QIURC: "recv",2\r\n') == b'\r\n+QIURC: "recv",2\r\n'
    b.sendto(b"BB", ("127.0.0.1", lport))
    wait_for(lambda: host.at("AT+QIRD=2,0") == b"\r\n+QIRD: 6,0,6\r\n" + OK, timeout=5, what="both datagrams")
    assert host.at("AT+QIRD=2,2") == f'\r\n+QIRD: 2,"127.0.0.1",{pa}\r\nAA\r\n\r\nOK\r\n'.encode()
    assert host.at("AT+QIRD=2,0") == b"\r\n+QIRD: 6,2,4\r\n" + OK
    assert host.at("AT+QISEND=2,0") == b"\r\n+QISEND: 0,0,0\r\n" + OK
    assert host.at('AT+QICFG="dataformat",0,1') == OK     # pushed data are not converted
    assert host.at("AT+QISWTMD=2,1") == OK
    want = (f'\r\n+QIURC: "recv",2,2,"127.0.0.1",{pa}\r\nAA\r\n'
            f'\r\n+QIURC: "recv",2,2,"127.0.0.1",{pb}\r\nBB\r\n').encode()
    assert host.read_exactly(len(want)) == want
    a.sendto(b"\x00\xff", ("127.0.0.1", lport))
    want = f'\r\n+QIURC: "recv",2,2,"127.0.0.1",{pa}\r\n'.encode() + b"\x00\xff\r\n"
    assert host.read_exactly(len(want)) == want
    host.write(f'AT+QISEND=2,3,"127.0.0.1",{c.getsockname()[1]}\r')
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(b"abc")
    assert host.read_until(RESULT) == b"\r\nSEND OK\r\n"
    assert c.recvfrom(100) == (b"abc", ("127.0.0.1", lport))
    assert host.at("AT+QISEND=2,0") == b"\r\n+QISEND: 3,3,0\r\n" + OK
    assert host.at("AT+QIRD=2,0") == b"\r\n+QIRD: 8,8,0\r\n" + OK
    assert host.at("AT+QISWTMD=2,2") == ERROR             # no transparent UDP SERVICE
    assert error_code(host) == 572
    for s in (a, b, c):
        s.close()


def test_hex_both_ways_on_a_udp_client_with_qisde_0_and_ate1(modem, udp_echo):
    """dataformat 1,1, AT+QISDE=0, ATE1: the command lines are echoed, the hex data never; one
    send is one datagram whatever the form (fixed, Ctrl+Z, AT+QISENDEX); each echo is read in
    hex, a short read leaving the rest of that datagram; <local_port> 4321 is shown."""
    host, _, _ = modem
    assert host.at(f'AT+QIOPEN=1,3,"UDP","{UDP_HOST}",{UDP_PORT},4321,0') == OK
    assert host.read_until(b"+QIOPEN: 3,0\r\n") == b"\r\n+QIOPEN: 3,0\r\n"
    assert re.fullmatch(rb'\r\n\+QISTATE: 3,"UDP","[\d.]+",7001,4321,2,1,3,0,"usbmodem"\r\n\r\nOK\r\n',
                        host.at("AT+QISTATE=0,1"))
    assert host.at('AT+QICFG="dataformat",1,1;+QISDE=0;E1') == OK
    host.write("AT+QISEND=3,3\r")
    assert host.read_until(b"> ") == b"AT+QISEND=3,3\r\r\n> "
    host.write(b"616263")
    assert host.read_until(RESULT) == b"\r\nSEND OK\r\n"        # no digits echoed
    assert host.read_until(b'+QIURC: "recv",3\r\n') == b'\r\n+QIURC: "recv",3\r\n'
    assert host.at("AT+QIRD=3,2") == b"AT+QIRD=3,2\r\r\n+QIRD: 2\r\n6162\r\n" + OK
    assert host.at("AT+QIRD=3,2") == b"AT+QIRD=3,2\r\r\n+QIRD: 1\r\n63\r\n" + OK
    assert host.at("AT+QIRD=3,0") == b"AT+QIRD=3,0\r\r\n+QIRD: 3,3,0\r\n" + OK
    host.write("AT+QISEND=3\r")
    assert host.read_until(b"> ") == b"AT+QISEND=3\r\r\n> "
    host.write(b"00fF\x1a")
    assert host.read_until(RESULT) == b"\r\nSEND OK\r\n"
    assert host.read_until(b'+QIURC: "recv",3\r\n') == b'\r\n+QIURC: "recv",3\r\n'
    assert host.at("AT+QIRD=3") == b"AT+QIRD=3\r\r\n+QIRD: 2\r\n00ff\r\n" + OK
    assert host.at('AT+QISENDEX=3,"7a"') == b'AT+QISENDEX=3,"7a"\r\r\nSEND OK\r\n'
    assert host.read_until(b'+QIURC: "recv",3\r\n') == b'\r\n+QIURC: "recv",3\r\n'
    assert host.at("AT+QIRD=3") == b"AT+QIRD=3\r\r\n+QIRD: 1\r\n7a\r\n" + OK
    assert host.at("AT+QISEND=3,0") == b"AT+QISEND=3,0\r\r\n+QISEND: 6,6,0\r\n" + OK
    assert host.at("ATE0") == b"ATE0\r" + OK
    assert host.at("AT+QICLOSE=3") == OK


# -- listeners and the id pool ----------------------------------------------------------------
def test_listener_id_refuses_data_commands_and_ports_conflict_per_protocol(modem):
    host, _, _ = modem
    lport = free_port()
    qiopen(host, 0, "TCP LISTENER", "127.0.0.1", 0, local_port=lport)
    for line in ("AT+QISEND=0,0", "AT+QISEND=0,3", "AT+QISEND=0", "AT+QIRD=0", "AT+QIRD=0,0",
                 'AT+QISENDEX=0,"41"', "AT+QISWTMD=0,0", "AT+QISWTMD=0,1", "AT+QISWTMD=0,2",
                 "AT+QSSLCLOSE=0", "AT+QSSLRECV=0,10"):
        assert host.at(line) == ERROR, line
        assert error_code(host) == 572, line
    assert host.at('AT+QSSLOPEN=1,1,0,"x.example",443,0') == ERROR      # one pool of ids
    assert error_code(host) == 563
    assert host.at(f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,0') == OK
    assert host.read_until(b"+QIOPEN: 0,563\r\n") == b"\r\n+QIOPEN: 0,563\r\n"
    # a second listener on the port: 556; a UDP SERVICE on the same number is another port
    assert host.at(f'AT+QIOPEN=1,1,"TCP LISTENER","127.0.0.1",0,{lport},0') == OK
    assert host.read_until(b"+QIOPEN: 1,556\r\n") == b"\r\n+QIOPEN: 1,556\r\n"
    assert error_code(host) == 556
    qiopen(host, 2, "UDP SERVICE", "127.0.0.1", 0, local_port=lport)
    assert host.at(f'AT+QIOPEN=1,3,"UDP SERVICE","127.0.0.1",0,{lport},0') == OK
    assert host.read_until(b"+QIOPEN: 3,556\r\n") == b"\r\n+QIOPEN: 3,556\r\n"
    assert host.at("AT+QISTATE?") == (
        f'\r\n+QISTATE: 0,"TCP LISTENER","127.0.0.1",0,{lport},3,1,0,0,"usbmodem"\r\n'
        f'+QISTATE: 2,"UDP SERVICE","127.0.0.1",0,{lport},2,1,2,0,"usbmodem"\r\n\r\nOK\r\n').encode()
    # both still work
    c = socket.create_connection(("127.0.0.1", lport))
    assert host.read_until(b'"incoming"') and host.read_until(b"\r\n") == \
        f',1,0,"127.0.0.1",{c.getsockname()[1]}\r\n'.encode()
    u = udp_socket()
    u.sendto(b"u", ("127.0.0.1", lport))
    assert host.read_until(b'+QIURC: "recv",2\r\n') == b'\r\n+QIURC: "recv",2\r\n'
    c.close()
    assert host.read_until(b'+QIURC: "closed",1\r\n') == b'\r\n+QIURC: "closed",1\r\n'
    for i in (1, 0, 2):
        assert host.at(f"AT+QICLOSE={i}") == OK
    assert host.at("AT+QISTATE?") == OK
    u.close()


def test_a_module_port_mapped_to_any_free_port_is_still_one_port(modem, emulator):
    """Unmapped, a second listener on a <local_port> is 556 (the test above); mapped with
    Router.add_listen(<local_port>, "127.0.0.1", 0) each open binds a fresh loopback port, and
    the module's port 2020 is listened on twice -- a real module refuses the second bind."""
    host, _, _ = modem
    emulator.router.add_listen(2020, "127.0.0.1", 0)
    emulator.router.add_listen(5683, "127.0.0.1", 0)
    qiopen(host, 0, "TCP LISTENER", "127.0.0.1", 0, local_port=2020)
    qiopen(host, 2, "UDP SERVICE", "127.0.0.1", 0, local_port=5683)
    assert host.at('AT+QIOPEN=1,1,"TCP LISTENER","127.0.0.1",0,2020,0') == OK
    assert host.read_until(b"+QIOPEN: 1,") + host.read_until(b"\r\n") == b"\r\n+QIOPEN: 1,556\r\n"
    assert host.at('AT+QIOPEN=1,3,"UDP SERVICE","127.0.0.1",0,5683,0') == OK
    assert host.read_until(b"+QIOPEN: 3,") + host.read_until(b"\r\n") == b"\r\n+QIOPEN: 3,556\r\n"
    assert host.at("AT+QISTATE?") == (
        b'\r\n+QISTATE: 0,"TCP LISTENER","127.0.0.1",0,2020,3,1,0,0,"usbmodem"\r\n'
        b'+QISTATE: 2,"UDP SERVICE","127.0.0.1",0,5683,2,1,2,0,"usbmodem"\r\n\r\nOK\r\n')


def test_push_listener_incoming_read_close_reuse_and_transparent(modem):
    host, advance, _ = modem
    lport = free_port()
    qiopen(host, 0, "TCP LISTENER", "127.0.0.1", 0, local_port=lport, mode=1)
    a = socket.create_connection(("127.0.0.1", lport))
    a.settimeout(5)
    assert host.read_until(b"\r\n", timeout=5) == b"\r\n"
    assert host.read_until(b"\r\n") == f'+QIURC: "incoming",1,0,"127.0.0.1",{a.getsockname()[1]}\r\n'.encode()
    assert host.at("AT+QIRD=1") == ERROR                  # pushed: nothing to read
    assert error_code(host) == 572
    assert host.at("AT+QIRD=1,0") == b"\r\n+QIRD: 0,0,0\r\n" + OK
    prompt(host, "AT+QISEND=1,4")
    a.sendall(b"push")
    assert host.quiet_for(0.4) == b""                     # nothing inside the prompt
    host.write(b"data")
    assert host.read_until(RESULT) == b"\r\nSEND OK\r\n"
    assert host.read_exactly(len(b'\r\n+QIURC: "recv",1,4\r\npush\r\n')) == b'\r\n+QIURC: "recv",1,4\r\npush\r\n'
    assert a.recv(10) == b"data"
    host.write("AT+QICLOSE=1\r")
    assert a.recv(10) == b""                              # the modem's FIN
    a.close()
    assert host.read_until(b"OK\r\n") == OK
    assert host.at("AT+QISTATE?") == \
        f'\r\n+QISTATE: 0,"TCP LISTENER","127.0.0.1",0,{lport},3,1,0,1,"usbmodem"\r\n\r\nOK\r\n'.encode()
    b = socket.create_connection(("127.0.0.1", lport))
    b.settimeout(5)
    assert host.read_until(b'+QIURC: "incoming",') + host.read_until(b"\r\n") == \
        f'\r\n+QIURC: "incoming",1,0,"127.0.0.1",{b.getsockname()[1]}\r\n'.encode()
    host.write("AT+QISWTMD=1,2\r")
    assert host.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
    b.sendall(b"online!")
    assert host.read_exactly(7) == b"online!"
    host.write(b"back")
    advance(0.3)                                          # transwaittm 2 (200 ms)
    assert b.recv(10) == b"back"
    b.close()
    assert host.read_until(ONLINE_END) == b"\r\nNO CARRIER\r\n"
    state = host.at("AT+QISTATE=1,1")
    assert re.fullmatch(rb'\r\n\+QISTATE: 1,"TCP INCOMING","127\.0\.0\.1",\d+,%d,4,1,0,2,"usbmodem"\r\n\r\nOK\r\n'
                        % lport, state), state
    assert host.at("ATO") == b"\r\nNO CARRIER\r\n"
    assert host.at("AT+QICLOSE=1") == OK
    assert host.at("AT+QICLOSE=0") == OK
    assert host.at("AT+QISTATE?") == OK


def test_incoming_takes_the_id_of_a_socket_whose_close_lingers(modem, peer_factory):
    """AT+QICLOSE=1,5 to a server that never closes: the port waits for the close; a client of
    the listener on 0 arriving meanwhile is announced after the close's OK, on id 1, and the
    lingering close's end (5 s) leaves it alone."""
    host, advance, _ = modem
    peer = peer_factory()
    lport = free_port()
    qiopen(host, 0, "TCP LISTENER", "127.0.0.1", 0, local_port=lport)
    qiopen(host, 1)
    assert qisend(host, 1, b"bye") == b"\r\nSEND OK\r\n"
    host.write("AT+QICLOSE=1,5\r")
    advance(0)                                            # the modem has taken the line
    c = socket.create_connection(("127.0.0.1", lport))
    c.settimeout(5)
    assert host.quiet_for(0.4) == b""                     # the close still runs
    advance(5.5)
    got = host.read_until(b'"incoming"') + host.read_until(b"\r\n")
    assert got == f'\r\nOK\r\n\r\n+QIURC: "incoming",1,0,"127.0.0.1",{c.getsockname()[1]}\r\n'.encode()
    assert peer.eof.wait(5) and bytes(peer.got) == b"bye"
    c.sendall(b"hello")
    assert host.read_until(b'+QIURC: "recv",1\r\n') == b'\r\n+QIURC: "recv",1\r\n'
    assert host.at("AT+QIRD=1") == b"\r\n+QIRD: 5\r\nhello\r\n" + OK
    peer.close()
    assert host.quiet_for(0.4) == b""                     # the old connection's end says nothing
    assert qisend(host, 1, b"to-c") == b"\r\nSEND OK\r\n"
    assert c.recv(10) == b"to-c"
    assert re.fullmatch(rb'\r\n\+QISTATE: 1,"TCP INCOMING","127\.0\.0\.1",%d,%d,2,1,0,0,"usbmodem"\r\n\r\nOK\r\n'
                        % (c.getsockname()[1], lport), host.at("AT+QISTATE=1,1"))
    c.close()
    assert host.read_until(b'+QIURC: "closed",1\r\n') == b'\r\n+QIURC: "closed",1\r\n'
    assert host.at("AT+QICLOSE=1") == OK and host.at("AT+QICLOSE=0") == OK


def test_deactivating_one_context_closes_only_its_sockets_listener_and_incoming(modem, tcp_echo):
    """Sockets on contexts 1 and 2 (a client, a listener and its incoming on 2): AT+QISTATE=0,<cid>
    lists each context's own; AT+QIDEACT=2 reports "closed" for the three on 2 (the listener
    too, its client's connection ended) and frees their ids (the TCP(IP) note: it closes "all
    TCP/IP connections set up in this context"), no "pdpdeact"; the client on 1 carries on."""
    host, _, _ = modem
    assert host.at('AT+QICSGP=2,1,"OTHER","","",1;+QIACT=2') == OK
    qiopen(host, 0)
    assert host.at(f'AT+QIOPEN=2,1,"TCP","{TCP_HOST}",{TCP_PORT},0,0') == OK
    assert host.read_until(b"+QIOPEN: 1,0\r\n") == b"\r\n+QIOPEN: 1,0\r\n"
    lport = free_port()
    assert host.at(f'AT+QIOPEN=2,2,"TCP LISTENER","127.0.0.1",0,{lport},0') == OK
    assert host.read_until(b"+QIOPEN: 2,0\r\n") == b"\r\n+QIOPEN: 2,0\r\n"
    c = socket.create_connection(("127.0.0.1", lport))
    c.settimeout(5)
    cport = c.getsockname()[1]
    assert host.read_until(b'"incoming"') + host.read_until(b"\r\n") == \
        f'\r\n+QIURC: "incoming",3,2,"127.0.0.1",{cport}\r\n'.encode()
    two = host.at("AT+QISTATE=0,2")
    assert re.fullmatch((r'\r\n\+QISTATE: 1,"TCP","[\d.]+",7000,\d+,2,2,1,0,"usbmodem"\r\n'
                         rf'\+QISTATE: 2,"TCP LISTENER","127\.0\.0\.1",0,{lport},3,2,2,0,"usbmodem"\r\n'
                         rf'\+QISTATE: 3,"TCP INCOMING","127\.0\.0\.1",{cport},{lport},2,2,2,0,"usbmodem"\r\n'
                         r'\r\nOK\r\n').encode(), two), two
    assert re.fullmatch(rb'\r\n\+QISTATE: 0,"TCP","[\d.]+",7000,\d+,2,1,0,0,"usbmodem"\r\n\r\nOK\r\n',
                        host.at("AT+QISTATE=0,1"))
    assert host.at("AT+QIDEACT=2") == OK
    closed = host.read_exactly(3 * len(b'\r\n+QIURC: "closed",1\r\n'))
    assert sorted(re.findall(rb'\+QIURC: "closed",(\d)', closed)) == [b"1", b"2", b"3"], closed
    assert b"pdpdeact" not in closed
    assert c.recv(10) == b""
    states = host.at("AT+QISTATE?")           # (the three on 2 are gone: their ids free)
    assert re.findall(rb'\+QISTATE: (\d),"[A-Z ]+","[\d.]+",\d+,\d+,(\d),(\d)', states) == \
        [(b"0", b"2", b"1")], states
    assert qisend(host, 0, b"still") == b"\r\nSEND OK\r\n"
    assert host.read_until(b'+QIURC: "recv",0\r\n') == b'\r\n+QIURC: "recv",0\r\n'
    assert host.at("AT+QIRD=0") == b"\r\n+QIRD: 5\r\nstill\r\n" + OK
    c.close()
    assert host.at("AT+QICLOSE=3;+QICLOSE=2;+QICLOSE=1;+QICLOSE=0") == OK
    assert host.at("AT+QISTATE?") == OK


# -- transparent mode, escaped ----------------------------------------------------------------
def test_escaped_transparent_socket_sends_with_qisend_and_ato_brings_the_echo(modem, tcp_echo):
    host, advance, _ = modem
    host.write(f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,2\r')
    assert host.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
    host.write(b"hello")
    advance(0.3)
    assert host.read_exactly(5) == b"hello"
    assert escape(host, advance) == OK
    assert re.fullmatch(rb'\r\n\+QISTATE: 0,"TCP","[\d.]+",7000,\d+,2,1,0,2,"usbmodem"\r\n\r\nOK\r\n',
                        host.at("AT+QISTATE=1,0"))
    assert host.at("AT+QIRD=0,0") == b"\r\n+QIRD: 5,5,0\r\n" + OK
    counters(host, 0, b"5,5,0")
    assert qisend(host, 0, b"viaqisend") == b"\r\nSEND OK\r\n"
    wait_for(lambda: host.at("AT+QIRD=0,0") == b"\r\n+QIRD: 14,5,9\r\n" + OK, timeout=5,
             what="the echo waiting in the socket")
    assert host.quiet_for(0.2) == b""                     # no "recv" URC for it
    assert host.at("AT+QIRD=0,5") == ERROR
    assert error_code(host) == 572
    counters(host, 0, b"14,14,0")
    host.write("ATO\r")
    assert host.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
    assert host.read_exactly(9) == b"viaqisend"
    assert escape(host, advance) == OK
    assert host.at("AT+QIRD=0,0") == b"\r\n+QIRD: 14,14,0\r\n" + OK
    assert host.at("AT+QICLOSE=0") == OK


# -- the modem's DNS and the sockets ----------------------------------------------------------
def test_routed_names_show_one_address_in_dnsgip_qistate_and_qping(modem, tcp_echo, udp_echo):
    host, advance, _ = modem
    qiopen(host, 0)
    qiopen(host, 1, "UDP", UDP_HOST, UDP_PORT)
    state = host.at("AT+QISTATE?")
    m = re.fullmatch(rb'\r\n\+QISTATE: 0,"TCP","([\d.]+)",7000,\d+,2,1,0,0,"usbmodem"\r\n'
                     rb'\+QISTATE: 1,"UDP","([\d.]+)",7001,\d+,2,1,1,0,"usbmodem"\r\n\r\nOK\r\n', state)
    assert m, state
    tcp_ip, udp_ip = m.group(1), m.group(2)
    assert tcp_ip != udp_ip
    for name, ip in ((TCP_HOST, tcp_ip), (UDP_HOST, udp_ip)):
        assert host.at(f'AT+QIDNSGIP=1,"{name}"') == OK
        want = b'\r\n+QIURC: "dnsgip",0,1,600\r\n\r\n+QIURC: "dnsgip","' + ip + b'"\r\n'
        assert host.read_exactly(len(want)) == want
    assert host.at(f'AT+QPING=1,"{TCP_HOST}",1,2') == OK
    advance(0.5)
    want = (b'\r\n+QPING: 0,"' + tcp_ip + b'",32,20,255\r\n') * 2 + b"\r\n+QPING: 0,2,2,0,20,20,20\r\n"
    assert host.read_exactly(len(want)) == want
    assert host.at("AT+QICLOSE=0") == OK and host.at("AT+QICLOSE=1") == OK


def test_opening_the_address_dnsgip_answered_reaches_the_routed_server(modem, tcp_echo):
    """What RT-Thread's at_device (EC20), Zephyr's BG9x driver, mbed's BG96 driver do: resolve
    with AT+QIDNSGIP, then AT+QIOPEN the first address.  On a module the server the name
    leads to answers; here the name is routed to the loopback echo server, so its address
    must lead there too."""
    host, _, _ = modem
    assert host.at(f'AT+QIDNSGIP=1,"{TCP_HOST}"') == OK
    head = host.read_until(b"\r\n\r\n")
    assert head == b'\r\n+QIURC: "dnsgip",0,1,600\r\n\r\n'
    ip = re.fullmatch(rb'\+QIURC: "dnsgip","([\d.]+)"\r\n', host.read_until(b"\r\n")).group(1).decode()
    assert host.at(f'AT+QIOPEN=1,0,"TCP","{ip}",{TCP_PORT},0,0') == OK
    assert host.read_until(b"+QIOPEN: 0,") + host.read_until(b"\r\n") == b"\r\n+QIOPEN: 0,0\r\n"
    assert qisend(host, 0, b"by-ip") == b"\r\nSEND OK\r\n"
    assert host.read_until(b'+QIURC: "recv",0\r\n') == b'\r\n+QIURC: "recv",0\r\n'
    assert host.at("AT+QIRD=0") == b"\r\n+QIRD: 5\r\nby-ip\r\n" + OK
    assert host.at("AT+QICLOSE=0") == OK


def test_a_name_the_modems_dns_answers_is_dialled_at_that_address(modem, emulator, tcp_echo):
    """docs/behaviour.md (DNS): "AT+QIOPEN and AT+QSSLOPEN resolve a name the same way" as
    AT+QIDNSGIP.  named.example has a DNS entry 203.0.113.7; 203.0.113.7:80 is routed to the
    echo server: opening the name must reach it, as on a network whose DNS answers that."""
    host, _, _ = modem
    emulator.router.add_dns("named.example", "203.0.113.7")
    emulator.router.add_map("203.0.113.7", 80, "127.0.0.1", tcp_echo.port)
    assert host.at('AT+QIDNSGIP=1,"named.example"') == OK
    want = b'\r\n+QIURC: "dnsgip",0,1,600\r\n\r\n+QIURC: "dnsgip","203.0.113.7"\r\n'
    assert host.read_exactly(len(want)) == want
    qiopen(host, 1, "TCP", "203.0.113.7", 80)                 # the address itself is reachable
    assert host.at("AT+QICLOSE=1") == OK
    assert host.at('AT+QIOPEN=1,0,"TCP","named.example",80,0,0') == OK
    assert host.read_until(b"+QIOPEN: 0,") + host.read_until(b"\r\n") == b"\r\n+QIOPEN: 0,0\r\n"
    assert qisend(host, 0, b"by-name") == b"\r\nSEND OK\r\n"
    assert host.read_until(b'+QIURC: "recv",0\r\n') == b'\r\n+QIURC: "recv",0\r\n'
    assert host.at("AT+QIRD=0") == b"\r\n+QIRD: 7\r\nby-name\r\n" + OK
    assert re.fullmatch(rb'\r\n\+QISTATE: 0,"TCP","203\.0\.113\.7",80,\d+,2,1,0,0,"usbmodem"\r\n\r\nOK\r\n',
                        host.at("AT+QISTATE=1,0"))
    assert host.at("AT+QICLOSE=0") == OK


# -- a restart ----------------------------------------------------------------------------------
def test_restart_frees_listener_and_service_ports_and_resets_settings(modem):
    """AT+CFUN=1,1 with a listener, its client, a UDP SERVICE, recvind and AT+QISDE=0 set: the
    client's connection ends, nothing is reported, new clients are refused, AT+QISTATE? is
    empty, the settings are the defaults, and both ports open again (no 556)."""
    host, advance, _ = modem
    lport, uport = free_port(), free_port(socket.SOCK_DGRAM)
    qiopen(host, 0, "TCP LISTENER", "127.0.0.1", 0, local_port=lport)
    qiopen(host, 5, "UDP SERVICE", "127.0.0.1", 0, local_port=uport)
    c = socket.create_connection(("127.0.0.1", lport))
    c.settimeout(5)
    assert host.read_until(b'"incoming"') + host.read_until(b"\r\n") == \
        f'\r\n+QIURC: "incoming",1,0,"127.0.0.1",{c.getsockname()[1]}\r\n'.encode()
    assert host.at('AT+QICFG="recvind",1;+QISDE=0') == OK
    assert host.at("AT+CFUN=1,1") == OK
    try:
        assert c.recv(10) == b""
    except ConnectionResetError:
        pass
    advance(5)                                            # the restart's own time
    boot = host.read_until(b"+QIND: PB DONE\r\n")
    assert b"QIURC" not in boot and boot.startswith(b"\r\nRDY\r\n"), boot
    assert host.at("ATE0") in (b"ATE0\r" + OK, OK)
    assert host.at("AT+QISTATE?") == OK
    assert host.at('AT+QICFG="recvind";+QISDE?') == b'\r\n+QICFG: "recvind",0\r\n\r\n+QISDE: 1\r\n' + OK
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", lport), timeout=2)
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
    qiopen(host, 0, "TCP LISTENER", "127.0.0.1", 0, local_port=lport)
    qiopen(host, 5, "UDP SERVICE", "127.0.0.1", 0, local_port=uport)
    assert host.at("AT+QISTATE?") == (
        f'\r\n+QISTATE: 0,"TCP LISTENER","127.0.0.1",0,{lport},3,1,0,0,"usbmodem"\r\n'
        f'+QISTATE: 5,"UDP SERVICE","127.0.0.1",0,{uport},2,1,5,0,"usbmodem"\r\n\r\nOK\r\n').encode()
    c.close()
    assert host.at("AT+QICLOSE=0;+QICLOSE=5") == OK
