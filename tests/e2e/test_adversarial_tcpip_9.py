"""A ninth adversarial pass over the EC2x TCP/IP commands (AT+QIOPEN & co.), aimed at what
rounds 1-8 (test_adversarial_tcpip*.py) and the other TCP/IP tests leave out
(docs/behaviour.md "TCP/UDP sockets (EC2x)"; formats from the BG96/BG95 TCP/IP notes):

* hex data (AT+QICFG="dataformat",1,1) on a UDP SERVICE with its destination: the fixed length
  counts bytes (2 x <len> digits taken, split over writes), the reply read as hex with its
  sender, AT+QIRD=<id>,0 counting bytes, the 1460-byte maximum as 2920 digits, 1461 refused;
* AT+QICLOSE with a long timeout of services that have no connection to linger on (a "UDP"
  client, a UDP SERVICE, a TCP LISTENER): OK at once on the manual clock;
* the peer closing (FIN or RST) while the host is inside AT+QISEND's '>' prompt: ERROR (567),
  nothing sent, "closed" once after the answer, AT+QIGETERROR 567;
* AT+QIGETERROR following each TCP/IP command's own result in a sequence of failures
  and successes;
* a TCP LISTENER on a high id with low ids taken: five clients at once get the free ids in
  order of arrival, AT+QISTATE=0,<cid> lists them with the listener's serverID, each reads its
  own client's bytes;
* ATS3/ATS4 changed: every TCP/IP answer, prompt, push and URC framed with them, the data not;
* AT+QICFG="dataformat",1,1 converts the TCP/IP commands' data only: an SSL socket beside it
  (AT+QSSLSEND, AT+QSSLRECV, its push) stays raw;
* ids in the one pool held by an SSL open still handshaking and by a TCP socket its peer
  closed (not yet AT+QICLOSEd): "incoming" skips them until they are closed;
* a client flooding a buffer-mode TCP INCOMING six times past recv_buffer, then closing: every
  byte read back in order, "closed" once, never inside an AT+QIRD answer;
* AT+QICLOSE=<id>,2 lingering on a push-mode TCP INCOMING whose client pours without end: OK
  after the timeout on the manual clock, the client reset, no push or "closed" of the old
  connection after the OK, the id serving the next client cleanly.

No bug found this round: every test passes.  (A first version of the RST-in-the-prompt case
closed the peer's socket while another thread was blocked in recv() on it: the kernel sent the
RST only when the modem's data woke that recv(), a test artefact, not the emulator's.)

Every test runs on ec2x_strict (manual clock, no ERROR log record, no traceback) and reaches
only loopback addresses."""
from __future__ import annotations

import os
import re
import socket
import threading
import time

import pytest

from tests.e2e.socket_support import TCP_HOST, TCP_PORT, free_port, qiopen, udp_peer
from tests.e2e.test_adversarial_tcpip_8 import open_listener, open_service

OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"
SEND_OK = b"\r\nSEND OK\r\n"


@pytest.fixture
def modem(ec2x_strict):
    return ec2x_strict


def geterror(host) -> bytes:
    return host.at("AT+QIGETERROR")


# -- hex data on a UDP SERVICE ---------------------------------------------------------------
def test_hex_send_on_a_udp_service_with_destination_and_hex_reads_name_the_sender(modem):
    host, advance, _ = modem
    assert host.at('AT+QICFG="dataformat",1,1') == OK
    sport = free_port(socket.SOCK_DGRAM)
    open_service(host, 0, sport)
    peer = udp_peer()
    pport = peer.getsockname()[1]
    try:
        host.write(f'AT+QISEND=0,3,"127.0.0.1",{pport}\r')
        assert host.read_until(b"> ") == b"\r\n> "
        host.write(b"41424")                # 5 of the 6 digits: nothing sent yet
        assert host.quiet_for(0.3) == b""
        host.write(b"3")
        assert host.read_until(SEND_OK) == SEND_OK
        data, src = peer.recvfrom(4096)
        assert (data, src) == (b"ABC", ("127.0.0.1", sport))
        peer.sendto(b"\x00\xff\r\nOK", ("127.0.0.1", sport))
        assert host.read_until(b'+QIURC: "recv",0\r\n') == b'\r\n+QIURC: "recv",0\r\n'
        assert host.at("AT+QIRD=0,0") == b"\r\n+QIRD: 6,0,6\r\n" + OK
        assert host.at("AT+QIRD=0,4") == f'\r\n+QIRD: 4,"127.0.0.1",{pport}\r\n00ff0d0a\r\n'.encode() + OK
        assert host.at("AT+QIRD=0,0") == b"\r\n+QIRD: 6,4,2\r\n" + OK
        assert host.at("AT+QIRD=0") == f'\r\n+QIRD: 2,"127.0.0.1",{pport}\r\n4f4b\r\n'.encode() + OK
        assert host.at("AT+QIRD=0") == b"\r\n+QIRD: 0\r\n" + OK
        # the maximum, 1460 bytes, is 2920 digits; 1461 is refused before any prompt
        blob = bytes(range(256)) * 5 + bytes(180)
        assert len(blob) == 1460
        host.write(f'AT+QISEND=0,1460,"127.0.0.1",{pport}\r')
        assert host.read_until(b"> ") == b"\r\n> "
        host.write(blob.hex().upper().encode())
        assert host.read_until(SEND_OK) == SEND_OK
        assert peer.recvfrom(4096) == (blob, ("127.0.0.1", sport))
        assert host.at(f'AT+QISEND=0,1461,"127.0.0.1",{pport}') == ERROR
        assert geterror(host) == b"\r\n+QIGETERROR: 552,invalid parameter\r\n" + OK
        assert host.at("AT+QISEND=0,0") == b"\r\n+QISEND: 1463,1463,0\r\n" + OK
    finally:
        peer.close()


# -- AT+QICLOSE with a timeout where nothing can linger ----------------------------------------
def test_qiclose_with_a_long_timeout_of_connectionless_services_is_at_once(modem, emulator):
    host, advance, _ = modem
    peer = udp_peer()
    emulator.router.add_map("u9.example", 5309, "127.0.0.1", peer.getsockname()[1])
    try:
        qiopen(host, 0, "UDP", "u9.example", 5309)
        open_service(host, 1, free_port(socket.SOCK_DGRAM))
        open_listener(host, 2, free_port())
        for cid in (0, 1, 2):
            # (manual clock: a linger of 65535 s would never end without advance())
            assert host.at(f"AT+QICLOSE={cid},65535", timeout=3) == OK
        assert host.at("AT+QISTATE") == OK
        assert host.quiet_for(0.3) == b""
    finally:
        peer.close()


# -- the peer goes while the host is in the prompt ----------------------------------------------
@pytest.mark.parametrize("how", ["fin", "rst"])
def test_peer_closes_inside_the_qisend_prompt(modem, peer_factory, how):
    host, advance, _ = modem
    peer = peer_factory(hold_reading=True)      # (no recv() blocked on it: a close is at once)
    qiopen(host, 0)
    assert peer.accepted.wait(5)
    host.write("AT+QISEND=0,5\r")
    assert host.read_until(b"> ") == b"\r\n> "
    if how == "fin":
        peer.shutdown_wr()
        peer.release_reading()
    else:
        peer.conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        peer.conn.close()
    time.sleep(0.3)                          # the modem sees the FIN / RST before the data
    host.write(b"hello")
    out = host.read_until(b'+QIURC: "closed",0\r\n')
    assert out == ERROR + b'\r\n+QIURC: "closed",0\r\n'
    assert host.quiet_for(0.3) == b""
    assert geterror(host) == b"\r\n+QIGETERROR: 567,socket has been closed\r\n" + OK
    if how == "fin":
        time.sleep(0.2)
        assert bytes(peer.got) == b""
    assert host.at("AT+QISEND=0,0") == b"\r\n+QISEND: 0,0,0\r\n" + OK
    assert host.at("AT+QICLOSE=0") == OK


# -- AT+QIGETERROR after each command ----------------------------------------------------------
def test_qigeterror_reports_each_commands_own_result(modem, emulator, tcp_echo):
    host, advance, _ = modem
    sport, lport = free_port(socket.SOCK_DGRAM), free_port()
    open_service(host, 3, sport)
    open_listener(host, 4, lport)
    steps = [
        ("AT+QISEND=7,5", ERROR, b"572,operation not allowed"),           # nothing open
        ("AT+QISTATE=1,7", OK, b"0,operate successfully"),
        ("AT+QIRD=4", ERROR, b"572,operation not allowed"),               # a listener
        ("AT+QIRD=4,0", ERROR, b"572,operation not allowed"),
        ("AT+QISEND=4,0", ERROR, b"572,operation not allowed"),
        ("AT+QIRD=3,0", b"\r\n+QIRD: 0,0,0\r\n" + OK, b"0,operate successfully"),
        ('AT+QISENDEX=3,"41"', ERROR, b"572,operation not allowed"),      # a UDP SERVICE
        ("AT+QISEND=3,5", ERROR, b"552,invalid parameter"),               # no destination
        ("AT+QISEND=3,0", b"\r\n+QISEND: 0,0,0\r\n" + OK, b"0,operate successfully"),
        ("AT+QISEND=3,1461", ERROR, b"552,invalid parameter"),
        ('AT+QICFG="dataformat",2,0', ERROR, b"552,invalid parameter"),
        ('AT+QICFG="dataformat"', b'\r\n+QICFG: "dataformat",0,0\r\n' + OK, b"0,operate successfully"),
        ("AT+QISTATE=0,17", ERROR, b"552,invalid parameter"),
        ("AT+QISDE?", b"\r\n+QISDE: 1\r\n" + OK, b"0,operate successfully"),
    ]
    for line, answer, err in steps:
        assert (line, host.at(line)) == (line, answer)
        assert (line, geterror(host)) == (line, b"\r\n+QIGETERROR: " + err + b"\r\n" + OK)
    # an open refused after its OK (id in use) reports the code; the next good command clears it
    assert host.at(f'AT+QIOPEN=1,3,"TCP","{TCP_HOST}",{TCP_PORT},0,0') == OK
    assert host.read_until(b"+QIOPEN: 3,") + host.read_until(b"\r\n") == b"\r\n+QIOPEN: 3,563\r\n"
    assert geterror(host) == b"\r\n+QIGETERROR: 563,socket identity has been used\r\n" + OK
    assert host.at("AT+QIOPEN=2,5,\"TCP\",\"127.0.0.1\",1,0,0") == OK
    assert host.read_until(b"+QIOPEN: 5,") + host.read_until(b"\r\n") == b"\r\n+QIOPEN: 5,561\r\n"
    assert geterror(host) == b"\r\n+QIGETERROR: 561,open PDP context failed\r\n" + OK
    qiopen(host, 0)
    assert geterror(host) == b"\r\n+QIGETERROR: 0,operate successfully\r\n" + OK
    host.write("AT+QISEND=0\r")
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(b"abc\x1b")
    assert host.read_until(ERROR) == ERROR
    assert geterror(host) == b"\r\n+QIGETERROR: 571,cancel send\r\n" + OK


# -- a listener on a high id, five clients at once --------------------------------------------
def test_listener_on_a_high_id_gives_five_simultaneous_clients_the_free_low_ids(modem, tcp_echo):
    host, advance, _ = modem
    qiopen(host, 1)                                   # id 1 taken by a client
    open_service(host, 3, free_port(socket.SOCK_DGRAM))   # id 3 by a UDP SERVICE
    lport = free_port()
    open_listener(host, 11, lport)
    clients = []
    for _ in range(5):
        c = socket.create_connection(("127.0.0.1", lport), timeout=5)
        clients.append(c)
    heads = host.read_until(re.compile(rb'(\+QIURC: "incoming",\d+,11,"127\.0\.0\.1",\d+\r\n.*){5}', re.S))
    found = re.findall(rb'\r\n\+QIURC: "incoming",(\d+),11,"127\.0\.0\.1",(\d+)\r\n', heads)
    assert len(found) == 5, heads
    ids = [int(i) for i, _ in found]
    assert ids == [0, 2, 4, 5, 6]                     # the lowest free ids, in order
    by_port = {int(p): i for i, p in zip(ids, (p for _, p in found))}
    assert sorted(by_port) == sorted(c.getsockname()[1] for c in clients)
    state = host.at("AT+QISTATE=0,1")
    for c in clients:
        cport = c.getsockname()[1]
        cid = by_port[cport]
        want = f'+QISTATE: {cid},"TCP INCOMING","127.0.0.1",{cport},{lport},2,1,11,0,"usbmodem"\r\n'.encode()
        assert want in state, state
    assert f'+QISTATE: 11,"TCP LISTENER","127.0.0.1",0,{lport},3,1,11,0,"usbmodem"'.encode() in state
    for n, c in enumerate(clients):
        c.sendall(f"client{n}".encode())
    got = host.read_until(re.compile(rb'(\+QIURC: "recv",\d+\r\n.*){5}', re.S))
    assert sorted(int(i) for i in re.findall(rb'"recv",(\d+)\r\n', got)) == sorted(ids)
    for n, c in enumerate(clients):
        cid = by_port[c.getsockname()[1]]
        assert host.at(f"AT+QIRD={cid}") == f"\r\n+QIRD: 7\r\nclient{n}\r\n".encode() + OK
    for c in clients:
        c.close()
    out = host.read_until(re.compile(rb'(\+QIURC: "closed",\d+\r\n.*){5}', re.S))
    assert sorted(int(i) for i in re.findall(rb'"closed",(\d+)', out)) == sorted(ids)
    assert host.quiet_for(0.3) == b""


# -- S3/S4 framing of every TCP/IP answer and URC ---------------------------------------------
def test_s3_s4_frame_tcpip_answers_prompts_pushes_and_urcs(modem, tcp_echo):
    """ATS3=35, ATS4=64 (docs/behaviour.md: <CR> and <LF> in answers are S3 and S4): the
    prompt, SEND OK, the "recv" URC, AT+QIRD's head and the CR LF after its data, a push's
    CR LF, AT+QISTATE and "incoming"/"closed" all use them; the data themselves are untouched."""
    host, advance, _ = modem
    qiopen(host, 0)

    def at(line: str, eol: str = "#", end: bytes = re.compile(rb"(OK|ERROR)#@")) -> bytes:
        host.write(line + eol)
        return host.read_until(end)

    assert at("ATS3=35", "\r", b"OK#\n") == b"#\nOK#\n"
    assert at("ATS4=64") == b"#@OK#@"

    def send(line: str, data: bytes) -> bytes:
        host.write(line + "#")
        assert host.read_until(b"> ") == b"#@> "
        host.write(data)
        return host.read_until(b"SEND OK#@")

    assert send("AT+QISEND=0,4", b"a\r\nb") == b"#@SEND OK#@"
    assert host.read_until(b'"recv",0#@') == b'#@+QIURC: "recv",0#@'
    assert at("AT+QIRD=0") == b"#@+QIRD: 4#@a\r\nb#@#@OK#@"
    assert at("AT+QISWTMD=0,1") == b"#@OK#@"
    assert send("AT+QISEND=0", b"xy\x1a") == b"#@SEND OK#@"
    assert host.read_until(b"xy#@") == b'#@+QIURC: "recv",0,2#@xy#@'
    assert at("AT+QISWTMD=0,0") == b"#@OK#@"
    assert at('AT+QICFG="viewmode",1') == b"#@OK#@"
    assert send("AT+QISEND=0,3", b"789") == b"#@SEND OK#@"
    assert host.read_until(b'"recv",0#@') == b'#@+QIURC: "recv",0#@'
    assert at("AT+QIRD=0") == b"#@+QIRD: 3,789#@#@OK#@"
    assert re.fullmatch(rb'#@\+QISTATE: 0,"TCP","[\d.]+",7000,\d+,2,1,0,0,"usbmodem"#@#@OK#@',
                        at("AT+QISTATE"))
    assert at("AT+QISEND=5,3") == b"#@ERROR#@"
    lport = free_port()
    assert at(f'AT+QIOPEN=1,1,"TCP LISTENER","127.0.0.1",0,{lport},0') == b"#@OK#@"
    assert host.read_until(b"+QIOPEN: 1,0#@") == b"#@+QIOPEN: 1,0#@"
    c = socket.create_connection(("127.0.0.1", lport), timeout=5)
    assert host.read_until(b"#@", timeout=5) == b"#@"
    assert host.read_until(b"#@") == f'+QIURC: "incoming",2,1,"127.0.0.1",{c.getsockname()[1]}#@'.encode()
    c.close()
    assert host.read_until(b'"closed",2#@') == b'#@+QIURC: "closed",2#@'
    assert at("ATS3=13", "#", b"OK\r@") == b"\r@OK\r@"
    assert host.at("ATS4=10") == OK


# -- AT+QICFG="dataformat" is the TCP/IP commands' only ---------------------------------------
def test_dataformat_hex_leaves_an_ssl_socket_on_the_shared_pool_raw(modem, tcp_echo, echo, pki):
    """dataformat 1,1: AT+QISEND takes hex and AT+QIRD gives hex on the TCP socket (id 0), while
    AT+QSSLSEND / AT+QSSLRECV / the SSL push on id 1 stay raw (the SSL note has no AT+QICFG)."""
    host, advance, _ = modem
    assert host.at('AT+QICFG="dataformat",1,1') == OK
    assert host.at('AT+QSSLOPEN=1,1,1,"echo.example",443,0') == OK
    assert host.read_until(b"+QSSLOPEN: 1,", timeout=10) + host.read_until(b"\r\n") == b"\r\n+QSSLOPEN: 1,0\r\n"
    host.write("AT+QSSLSEND=1,4\r")
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(b"4142")
    assert host.read_until(SEND_OK) == SEND_OK
    assert host.read_until(b'"recv",1\r\n', timeout=10) == b'\r\n+QSSLURC: "recv",1\r\n'
    assert host.at("AT+QSSLRECV=1,100") == b"\r\n+QSSLRECV: 4\r\n4142\r\n" + OK
    qiopen(host, 0)
    host.write("AT+QISEND=0,2\r")
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(b"4142")
    assert host.read_until(SEND_OK) == SEND_OK
    assert host.read_until(b'"recv",0\r\n') == b'\r\n+QIURC: "recv",0\r\n'
    assert host.at("AT+QIRD=0") == b"\r\n+QIRD: 2\r\n4142\r\n" + OK
    assert host.at("AT+QISWTMD=1,1") == OK
    host.write("AT+QSSLSEND=1,3\r")
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(b"x\x00z")
    assert host.read_until(SEND_OK) == SEND_OK
    assert host.read_until(b"\x00z\r\n", timeout=10) == b'\r\n+QSSLURC: "recv",1,3\r\nx\x00z\r\n'
    assert host.at("AT+QSSLCLOSE=1") == OK
    assert host.at("AT+QICLOSE=0") == OK


# -- ids held by SSL opens and by closed-but-not-released sockets ------------------------------
def test_incoming_skips_ids_held_by_an_opening_ssl_socket_and_a_peer_closed_tcp_socket(
        modem, emulator, peer_factory, echo, pki):
    """Id 0: an AT+QSSLOPEN whose handshake never answers (handshake_stall); id 1: a "TCP"
    client its server closed ("closed" said, no AT+QICLOSE yet); id 2: a TCP LISTENER.  One
    pool (docs/behaviour.md): the first client gets id 3; once AT+QICLOSE=1 and AT+QSSLCLOSE=0
    free their ids, the next two clients get 0 and 1, and the SSL socket's late fate says
    nothing more."""
    host, advance, _ = modem
    assert emulator.control("handshake_stall")["ok"]
    assert host.at('AT+QSSLOPEN=1,1,0,"echo.example",443,0') == OK
    peer = peer_factory()
    qiopen(host, 1)
    peer.close()
    assert host.read_until(b'"closed",1\r\n') == b'\r\n+QIURC: "closed",1\r\n'
    lport = free_port()
    open_listener(host, 2, lport)
    a = socket.create_connection(("127.0.0.1", lport), timeout=5)
    assert host.read_until(b'"incoming"') + host.read_until(b"\r\n") == \
        f'\r\n+QIURC: "incoming",3,2,"127.0.0.1",{a.getsockname()[1]}\r\n'.encode()
    assert host.at("AT+QICLOSE=1") == OK
    assert host.at("AT+QSSLCLOSE=0") == OK
    b = socket.create_connection(("127.0.0.1", lport), timeout=5)
    assert host.read_until(b'"incoming"') + host.read_until(b"\r\n") == \
        f'\r\n+QIURC: "incoming",0,2,"127.0.0.1",{b.getsockname()[1]}\r\n'.encode()
    c = socket.create_connection(("127.0.0.1", lport), timeout=5)
    assert host.read_until(b'"incoming"') + host.read_until(b"\r\n") == \
        f'\r\n+QIURC: "incoming",1,2,"127.0.0.1",{c.getsockname()[1]}\r\n'.encode()
    assert host.at("AT+QSSLSTATE") == OK                  # the incoming on 0 is no SSL socket
    state = host.at("AT+QISTATE")
    assert [int(i) for i in re.findall(rb"\+QISTATE: (\d+),", state)] == [0, 1, 2, 3]
    assert host.at('AT+QSSLOPEN=1,1,0,"echo.example",443,0') == ERROR
    assert geterror(host) == b"\r\n+QIGETERROR: 563,socket identity has been used\r\n" + OK
    advance(200)                                          # past any open timeout of the stalled open
    b.sendall(b"zero")
    assert host.read_until(b'"recv",0\r\n') == b'\r\n+QIURC: "recv",0\r\n'
    assert host.at("AT+QIRD=0") == b"\r\n+QIRD: 4\r\nzero\r\n" + OK
    for s in (a, b, c):
        s.close()
    out = host.read_until(re.compile(rb'(\+QIURC: "closed",\d+\r\n.*){3}', re.S))
    assert sorted(re.findall(rb'"closed",(\d+)', out)) == [b"0", b"1", b"3"]
    assert b"QSSL" not in out and host.quiet_for(0.3) == b""


# -- a client that floods a TCP INCOMING past the receive buffer, then closes ------------------
def test_incoming_flooded_past_the_receive_buffer_then_closed_reads_whole_then_closed_once(modem):
    """A buffer-mode listener's client pours 400 000 random bytes (six times recv_buffer) and
    closes while the host does not read: one "recv" URC; the host then reads with AT+QIRD=<id>
    until +QIRD: 0: every byte, in order; AT+QIRD=<id>,0 agrees; "closed" exactly once, never
    while the host has not read (docs/behaviour.md: past recv_buffer the FIN is seen once the
    host has read the buffer down), never inside an AT+QIRD answer."""
    host, advance, _ = modem
    lport = free_port()
    open_listener(host, 0, lport)
    blob = os.urandom(400_000)
    c = socket.create_connection(("127.0.0.1", lport), timeout=10)
    assert host.read_until(b'"incoming"') + host.read_until(b"\r\n") == \
        f'\r\n+QIURC: "incoming",1,0,"127.0.0.1",{c.getsockname()[1]}\r\n'.encode()

    def pour():
        c.sendall(blob)
        c.close()
    t = threading.Thread(target=pour, daemon=True)
    t.start()
    assert host.read_until(b'"recv",1\r\n') == b'\r\n+QIURC: "recv",1\r\n'
    time.sleep(0.5)
    assert host.quiet_for(0.2) == b""                   # no "closed" while bytes wait unread
    got = bytearray()
    extra = b""
    while True:
        host.write("AT+QIRD=1\r")
        head = host.read_until(re.compile(rb"\+QIRD: \d+\r\n"))
        n = int(re.search(rb"\+QIRD: (\d+)\r\n$", head).group(1))
        before = head[:head.rindex(b"+QIRD:")]
        assert before.endswith(b"\r\n"), before
        extra += before[:-2]                               # a URC that came between two reads
        if n == 0:
            extra += host.read_until(OK)
            break
        got += host.read_exactly(n)
        tail = host.read_until(OK)
        if tail != b"\r\n" + OK:
            extra += tail
            assert tail.startswith(b"\r\n" + OK), tail
    t.join(10)
    extra += host.read_until(b'"closed",1\r\n', timeout=10) if b'"closed"' not in extra else b""
    assert bytes(got) == blob
    assert extra.count(b'+QIURC: "closed",1') == 1
    assert host.at("AT+QIRD=1,0") == b"\r\n+QIRD: 400000,400000,0\r\n" + OK
    assert host.quiet_for(0.3) == b""
    assert host.at("AT+QICLOSE=1") == OK


# -- AT+QICLOSE lingering on a push-mode TCP INCOMING whose client keeps pouring --------------
def test_qiclose_linger_on_a_flooding_push_incoming_then_the_id_serves_the_next_client(modem):
    """A push-mode listener; its client streams without end.  AT+QICLOSE=<id>,2 lingers (the
    client never closes), on the manual clock ends after 2 s with OK, the client's connection
    reset; between the OK and the next client's "incoming" on the same id there is no push
    and no "closed" of the old connection; the new client's bytes come pushed whole."""
    host, advance, _ = modem
    lport = free_port()
    open_listener(host, 0, lport, mode=1)
    c = socket.create_connection(("127.0.0.1", lport), timeout=5)
    assert host.read_until(b'"incoming"') + host.read_until(b"\r\n") == \
        f'\r\n+QIURC: "incoming",1,0,"127.0.0.1",{c.getsockname()[1]}\r\n'.encode()
    stop = threading.Event()
    ended = []

    def pour():
        chunk = b"F" * 4096
        try:
            while not stop.is_set():
                c.sendall(chunk)
        except OSError as exc:
            ended.append(exc)
    t = threading.Thread(target=pour, daemon=True)
    t.start()
    host.read_until(b'+QIURC: "recv",1,')               # pushes are flowing
    host.write("AT+QICLOSE=1,2\r")
    early = host.quiet_for(0.3)                          # lingering: no answer yet
    assert OK not in early and b"ERROR" not in early
    advance(2.1)
    # the pushes already on their way, then the close's answer (the data are all "F": no OK)
    out = host.read_until(OK, timeout=10)
    assert b"ERROR" not in out
    t.join(5)
    stop.set()
    assert ended and isinstance(ended[0], (ConnectionResetError, BrokenPipeError)), ended
    c.close()
    assert host.quiet_for(0.5) == b""                    # nothing more of the old connection
    d = socket.create_connection(("127.0.0.1", lport), timeout=5)
    assert host.read_until(b"\r\n", timeout=5) == b"\r\n"
    assert host.read_until(b"\r\n") == f'+QIURC: "incoming",1,0,"127.0.0.1",{d.getsockname()[1]}\r\n'.encode()
    d.sendall(b"new one")
    assert host.read_until(b"new one\r\n") == b'\r\n+QIURC: "recv",1,7\r\nnew one\r\n'
    d.close()
    assert host.read_until(b'"closed",1\r\n') == b'\r\n+QIURC: "closed",1\r\n'
    assert host.quiet_for(0.3) == b""
