"""Adversarial tests of transparent access mode, round 9: angles rounds 1-8
(test_transparent.py, test_adversarial_transparent_3..8/_escape/_drivers.py) leave out.

* A host that closes the port while online, and a new program that (not knowing the port is
  already in command mode) sends a guarded "+++" and then ATO: the "+++" is command-state
  garbage (no OK, never sent), ATO returns to the connection, bytes exact both ways.
* Several rounds of bursts with "+++" runs inside (no guard times, no CR/LF) through an echo
  server, each burst ending in "++" followed by a real guarded "+++": the trailing "++" is data,
  the escape works, the echo arriving during the guard times and while parked comes exactly
  once (before the OK or after ATO's CONNECT): sha of both streams.
* A buffer-mode socket whose peer sent and closed: AT+QISWTMD=<id>,2 is ERROR 572 (not
  connected), the bytes stay readable once, ATO has nothing to return to.
* AT&D2: a DTR drop in command mode after "+++" is ignored (the connection stays, ATO
  resumes); the next drop online closes it (NO CARRIER, close_notify after the host's bytes).
* TCP transparent (AT+QIOPEN access mode 2): a transwaittm tail plus "++" held by the escape
  detector when the host closes the port: the close ends online mode as "+++" would, so the
  tail and the "++" (now data) leave at once, together, once; a new host's ATO goes on after
  them, its own tail waiting transwaittm again.
* ML302 connectmode 1: the parked ssid closed with AT+QSSLCLOSE, then ATO: NO CARRIER; the
  ssid opens again in connectmode 1 and data flow.
* AT+QPING's results raised while online wait behind the escape's OK (no URC in the data).
* A parked (A) while B goes online and ends in NO CARRIER: ATO has nothing (B ended last),
  AT+QISWTMD=A,2 returns to A with its waiting bytes; "AT+QISWTMD=4,2\r<payload>" in one
  write after a buffer-mode "recv": CONNECT, the waiting bytes, the payload into the link.
* TLS records cut by TCP (a hand-driven ssl.MemoryBIO server): half a record online, the escape,
  the rest with close_notify while parked (buffer fall-back, the record exactly once), a header
  cut in 7 bytes, a truncated record then FIN and a forged record (the module's
  bad_record_mac alert reaches OpenSSL), online and parked.
* The context lost while parked (AT+QIDEACT with data waiting, AT+CFUN=0 without): "recv" /
  "closed", ATO NO CARRIER; S12=255 edges; opening the parked id again (SSL or TCP) is 563
  and ATO still resumes; ML302 with S12=25, "+" runs next to the escape and an AT&D1 drop.
* A guarded "+++" and "AT\r" written while the transparent open waits for its handshake (the
  server holds its ServerHello): no answer, then CONNECT, and they reach the server as data.
* UDP transparent: a held "+" joining transpktsize packets and waiting transwaittm from its
  own arrival, seen datagram by datagram.

No bug found in this round: every case matched behaviour.md.

OpenSSL (Python ssl) servers through the emulator's router, guard times on the modem's manual
clock, exact bytes, no traceback (the strict fixtures), the port answering AT after."""
from __future__ import annotations

import hashlib
import random
import re
import select
import socket
import ssl
import threading
import time

import pytest

from emulator.testing.host import Host
from emulator.testing.peers import TlsServer
from tests.e2e.test_adversarial_transparent_3 import HOST_B, PORT_B, alive, echo_online, sink  # noqa: F401
from tests.e2e.test_adversarial_transparent_6 import tcp_transparent
from tests.e2e.test_adversarial_transparent_7 import open_buffer, qsslrecv_all
from tests.e2e.test_adversarial_transparent_escape import (CONNECT_OR_ERROR, FINAL, HOST, PORT,  # noqa: F401
                                                          ato, connect, escape, received)

OK = b"\r\nOK\r\n"
CONNECT = b"\r\nCONNECT\r\n"
NO_CARRIER = b"\r\nNO CARRIER\r\n"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def burst_with_plus_runs(n: int, seed: int) -> bytes:
    """n bytes, every value except CR and LF, with "+++" / "++++" runs sprinkled in, ending
    in "++"."""
    rnd = random.Random(seed)
    out = bytearray()
    while len(out) < n - 2:
        if rnd.random() < 0.05:
            out += b"+" * rnd.choice((1, 2, 3, 3, 4, 6))
        else:
            b = rnd.randrange(256)
            out.append(b if b not in (13, 10) else 0x41)
    return bytes(out[:n - 2]) + b"++"


class BioServer:
    """One TLS connection driven by hand (ssl.MemoryBIO): the test decides where TCP cuts
    the ciphertext."""
    def __init__(self, ctx):
        self.ctx = ctx
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.port = self.lsock.getsockname()[1]
        self.ready = threading.Event()
        self.received = bytearray()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _flush(self):
        data = self.out.read()
        if data:
            self.sock.sendall(data)

    def _run(self):
        self.sock, _ = self.lsock.accept()
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = self.ctx.wrap_bio(self.inc, self.out, server_side=True)
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                data = self.sock.recv(65536)
                if not data:
                    return
                self.inc.write(data)
        self._flush()
        self.ready.set()

    def record(self, data: bytes) -> bytes:
        self.obj.write(data)
        return self.out.read()

    def close_notify(self) -> bytes:
        try:
            self.obj.unwrap()
        except ssl.SSLWantReadError:
            pass
        return self.out.read()

    def close(self):
        for s in (getattr(self, "sock", None), self.lsock):
            if s:
                s.close()



# -- a new program after the host closed the port online ------------------------------------------
def test_new_host_guarded_plus_plus_plus_is_garbage_then_ato_resumes(emulator, sink):
    host, advance, port, server = sink
    host.write(b"before the close")
    assert received(server, 16) == b"before the close"
    host.close()
    time.sleep(0.2)
    again = Host(port.path)
    try:
        emulator.run(port.port.look_for_host)
        advance2 = emulator.advancer(port, again, before=host.written)
        advance2(1.2)
        again.write(b"+++")
        advance2(1.2)
        assert again.quiet_for(0.3) == b""           # command state already: no escape, no OK
        server.conn.send(b"while nobody was online")
        time.sleep(0.3)
        assert again.quiet_for(0.1) == b""           # waits for ATO
        assert ato(again) == CONNECT
        assert again.read_exactly(23) == b"while nobody was online"
        again.write(b"|after")
        assert received(server, 22) == b"before the close|after"   # no "+++", no "ATO"
        assert escape(again, advance2) == OK
        alive(again)
        time.sleep(0.1)
        assert bytes(server.conn.received) == b"before the close|after"
    finally:
        again.close()


# -- bursts full of "+++" runs with real escapes between them, echo downstream -------------------
def test_bursts_with_plus_runs_and_real_escapes_echo_exactly_once(emulator, echo_online):
    host, advance, port, server = echo_online
    bursts = [burst_with_plus_runs(40_000 + 997 * i, 900 + i) for i in range(3)]
    down = bytearray()
    for i, burst in enumerate(bursts):
        host.write(burst)
        advance(1.1)                                 # silence after a burst ending in "++"
        host.write(b"+++")
        advance(1.1)
        head = host.read_until(FINAL)                # echo bytes, then the escape's OK
        assert head.endswith(OK), head[-40:]
        down += head[:-len(OK)]
        total = sum(len(b) for b in bursts[:i + 1])
        server.wait_received(total, timeout=10)
        time.sleep(0.05)
        assert sha(bytes(server.conn.received)) == sha(b"".join(bursts[:i + 1]))
        assert ato(host) == CONNECT
    want = b"".join(bursts)
    down += host.read_exactly(len(want) - len(down))
    assert host.quiet_for(0.3) == b""
    assert sha(bytes(down)) == sha(want)
    assert escape(host, advance) == OK
    alive(host)
    assert len(server.conn.received) == len(want)


# -- AT+QISWTMD to transparent on a socket whose peer already closed ------------------------------
def test_qiswtmd_to_transparent_after_the_peer_closed_is_572_and_the_data_stay(emulator, ec2x_strict):
    host, advance, _ = ec2x_strict
    payload = bytes(range(256)) * 12                 # 3072 bytes
    with TlsServer(mode="sink", legacy=True) as server:
        emulator.router.add_map(HOST_B, PORT_B, "127.0.0.1", server.port)
        open_buffer(host)
        conn = server.wait_handshake()
        conn.send(payload)
        conn.close()
        assert host.read_until(b'"closed",5\r\n') == b'\r\n+QSSLURC: "recv",5\r\n\r\n+QSSLURC: "closed",5\r\n'
        assert host.at("AT+QISWTMD=5,2") == b"\r\nERROR\r\n"
        err = host.at("AT+QIGETERROR")
        assert re.match(rb"\r\n\+QIGETERROR: 572,", err) and err.endswith(OK), err
        assert qsslrecv_all(host, 5) == payload
        assert ato(host) == NO_CARRIER
        assert host.at("AT+QSSLCLOSE=5") == OK
        alive(host)


# -- AT&D2: a DTR drop in command mode is ignored, online it closes ------------------------------
def test_andd2_drop_while_parked_is_ignored_then_online_drop_closes(emulator, sink):
    host, advance, port, server = sink
    assert escape(host, advance) == OK
    assert host.at("AT&D2") == OK
    assert emulator.control("dtr", level=0) == {"ok": True}
    time.sleep(0.2)
    assert host.quiet_for(0.2) == b""
    assert emulator.control("dtr", level=1) == {"ok": True}
    state = host.at("AT+QSSLSTATE=4")
    assert b',"SSLClient",' in state and b",2," in state, state
    assert not server.conn.close_notify_received
    server.conn.send(b"parked")
    time.sleep(0.2)
    assert ato(host) == CONNECT
    assert host.read_exactly(6) == b"parked"
    host.write(b"last words")
    assert emulator.control("dtr", level=0) == {"ok": True}
    assert host.read_until(CONNECT_OR_ERROR) == NO_CARRIER
    server.wait_for(lambda: server.conn.close_notify_received, timeout=5)
    assert bytes(server.conn.received) == b"last words"
    assert emulator.control("dtr", level=1) == {"ok": True}
    assert ato(host) == NO_CARRIER
    alive(host)


# -- TCP transparent: the held "++" joins the transwaittm tail at the host's close --------------
def test_tcp_held_plus_joins_the_tail_at_the_hosts_close_and_ato_goes_on(emulator, ec2x_strict, tcp_sink):
    host, advance, port = ec2x_strict
    assert host.at('AT+QICFG="transwaittm",20') == OK            # 2 s (its maximum)
    assert host.at("ATS12=25") == OK                             # guard time 0.5 s
    tcp_transparent(host)
    conn = tcp_sink.wait_connection()
    host.write(b"ab")                                            # the tail: waits 2 s
    advance(0.6)
    host.write(b"++")                                            # held: may begin an escape
    advance(0.1)
    time.sleep(0.1)
    host.close()
    time.sleep(0.3)
    again = Host(port.path)
    try:
        emulator.run(port.port.look_for_host)
        advance2 = emulator.advancer(port, again, before=host.written)
        # the close ends online mode as "+++" does: the tail and the released "++" go at
        # once, as one piece, before transwaittm is over (the modem clock stands at 0.7 s)
        assert conn.wait_received(4, timeout=3) == b"ab++"
        advance2(3.0)
        time.sleep(0.2)
        assert bytes(conn.received) == b"ab++"
        assert ato(again) == CONNECT
        again.write(b"cd")
        advance2(1.9)
        time.sleep(0.3)
        assert bytes(conn.received) == b"ab++"
        advance2(0.2)
        assert conn.wait_received(6, timeout=3) == b"ab++cd"
        assert escape(again, advance2) == OK
        time.sleep(0.2)
        assert bytes(conn.received) == b"ab++cd"
        assert again.at("AT") == OK
    finally:
        again.close()


# -- ML302 connectmode 1: ATO after the parked ssid was closed ------------------------------------
def test_ml302_qsslclose_of_the_parked_ssid_then_ato_no_carrier_and_reopen(emulator, ml302_strict):
    host, advance, _ = ml302_strict
    with TlsServer(mode="echo", legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        connect(host, f'AT+QSSLOPEN=0,0,"{HOST}",{PORT},1')
        first = server.wait_handshake()
        host.write(b"one")
        assert host.read_exactly(3) == b"one"
        assert escape(host, advance) == OK
        assert host.at("AT+QSSLCLOSE=0") == OK
        assert host.read_until(b"CLOSE OK\r\n") == b"\r\n0,CLOSE OK\r\n"
        server.wait_for(lambda: first.close_notify_received, timeout=5)
        assert ato(host) == NO_CARRIER
        connect(host, f'AT+QSSLOPEN=0,0,"{HOST}",{PORT},1')
        second = server.wait_handshake()
        assert second is not first
        host.write(b"two")
        assert host.read_exactly(3) == b"two"
        assert escape(host, advance) == OK
        assert ato(host) == CONNECT
        host.write(b"three")
        assert host.read_exactly(5) == b"three"
        assert bytes(first.received) == b"one"
        assert bytes(second.received) == b"twothree"
        assert escape(host, advance) == OK
        assert host.at("AT") == OK


# -- a non-socket URC (AT+QPING's results) raised while online waits for the escape -------------
def test_ping_results_raised_while_online_wait_behind_the_escapes_ok(emulator, sink):
    host, advance, port, server = sink
    assert escape(host, advance) == OK
    assert host.at('AT+QPING=1,"10.9.9.9",1,2') == OK          # offline: both replies lost
    assert ato(host) == CONNECT
    host.write(b"up1")
    advance(1.5)                                               # the first reply times out
    server.conn.send(b"down-1")
    assert host.read_exactly(6) == b"down-1"                   # no +QPING inside the data
    advance(1.5)                                               # the second and the summary
    server.conn.send(b"down-2")
    assert host.read_exactly(6) == b"down-2"
    assert host.quiet_for(0.3) == b""
    host.write(b"+++")
    advance(1.1)
    assert host.read_until(b"+QPING: 0,2,0,2,0,0,0\r\n") == \
        OK + b"\r\n+QPING: 569\r\n\r\n+QPING: 569\r\n\r\n+QPING: 0,2,0,2,0,0,0\r\n"
    assert bytes(server.conn.received) == b"up1"
    alive(host)


# -- A parked, B online ends with NO CARRIER: ATO has nothing, AT+QISWTMD=A,2 returns to A ----------
def test_parked_a_survives_b_ending_in_no_carrier_and_qiswtmd_returns_to_a(emulator, sink):
    host, advance, port, a = sink
    host.write(b"A1")
    assert received(a, 2) == b"A1"
    assert escape(host, advance) == OK
    a.conn.send(b"a waited")
    with TlsServer(mode="sink", legacy=True) as b:
        emulator.router.add_map(HOST_B, PORT_B, "127.0.0.1", b.port)
        connect(host, f'AT+QSSLOPEN=1,1,5,"{HOST_B}",{PORT_B},2')
        bconn = b.wait_handshake()
        host.write(b"B1")
        b.wait_received(2)
        bconn.send(b"b last")
        bconn.close()
        assert host.read_until(CONNECT_OR_ERROR) == b"b last" + NO_CARRIER
        assert host.quiet_for(0.3) == b""                      # no "closed" URC, no "recv"
        assert ato(host) == NO_CARRIER                         # B's session ended last
        state = host.at("AT+QSSLSTATE")
        assert re.search(rb'\+QSSLSTATE: 4,"SSLClient","[^"]+",\d+,\d+,2,1,4,2,', state), state   # connected, mode 2
        assert re.search(rb'\+QSSLSTATE: 5,"SSLClient","[^"]+",\d+,\d+,4,1,5,2,', state), state   # closing
        host.write(b"AT+QISWTMD=4,2\r")
        assert host.read_until(CONNECT_OR_ERROR) == CONNECT
        assert host.read_exactly(8) == b"a waited"
        host.write(b"A2")
        assert received(a, 4) == b"A1A2"
        assert escape(host, advance) == OK
        assert ato(host) == CONNECT                            # A left last now
        host.write(b"A3")
        assert received(a, 6) == b"A1A2A3"
        assert escape(host, advance) == OK
        assert host.at("AT+QSSLCLOSE=5") == OK
        assert bytes(bconn.received) == b"B1"
        alive(host)


# -- AT+QISWTMD=<id>,2 and the payload in one write, with data waiting ---------------------------------
def test_qiswtmd_to_transparent_and_payload_in_one_write_with_data_waiting(emulator, sink):
    host, advance, port, server = sink
    assert escape(host, advance) == OK
    waiting = bytes(range(256)) * 20                           # 5120 bytes, CR LF inside
    server.conn.send(waiting)
    time.sleep(0.3)
    assert host.at("AT+QISWTMD=4,0") == OK                   # buffer mode: a "recv" reminder
    assert host.read_until(b'"recv",4\r\n') == b'\r\n+QSSLURC: "recv",4\r\n'
    host.write(b"AT+QISWTMD=4,2\rpipelined payload")
    assert host.read_until(CONNECT_OR_ERROR) == CONNECT
    assert host.read_exactly(len(waiting)) == waiting
    assert received(server, 17) == b"pipelined payload"
    assert escape(host, advance) == OK
    alive(host)
    assert bytes(server.conn.received) == b"pipelined payload"


# -- a TLS record cut by TCP across the escape, then close_notify while parked -------------------
def test_record_cut_across_the_escape_then_close_notify_while_parked(emulator, ec2x_strict):
    """Half of a 16 KiB record arrives online (nothing can be decrypted yet), "+++" OK, the
    rest of the record with close_notify and FIN while parked: the fall-back to buffer mode
    ("recv", "closed"), ATO NO CARRIER, AT+QSSLRECV gives the record exactly once."""
    host, advance, _ = ec2x_strict
    with TlsServer(legacy=True) as ts:
        srv = BioServer(ts.context)
        try:
            emulator.router.add_map(HOST, PORT, "127.0.0.1", srv.port)
            connect(host)
            assert srv.ready.wait(5)
            data = bytes(range(256)) * 64
            ct = srv.record(data)
            srv.sock.sendall(ct[:len(ct) // 2])
            time.sleep(0.3)
            assert escape(host, advance) == OK                 # no byte of the record before it
            srv.sock.sendall(ct[len(ct) // 2:] + srv.close_notify())
            srv.sock.shutdown(socket.SHUT_WR)
            assert host.read_until(b'"closed",4\r\n') == \
                b'\r\n+QSSLURC: "recv",4\r\n\r\n+QSSLURC: "closed",4\r\n'
            assert ato(host) == NO_CARRIER
            assert qsslrecv_all(host, 4) == data
            assert host.at("AT+QSSLCLOSE=4") == OK
            alive(host)
        finally:
            srv.close()


def test_records_cut_across_escape_and_ato_then_close_notify_mid_record(emulator, ec2x_strict):
    """Record 1 cut across the escape, its rest arriving while parked; ATO: CONNECT, record 1;
    record 2's first half online, then its rest with close_notify in one TCP segment: record
    2 exactly, then NO CARRIER, once."""
    host, advance, _ = ec2x_strict
    with TlsServer(legacy=True) as ts:
        srv = BioServer(ts.context)
        try:
            emulator.router.add_map(HOST, PORT, "127.0.0.1", srv.port)
            connect(host)
            assert srv.ready.wait(5)
            one = bytes(range(256)) * 64
            two = bytes(reversed(range(256))) * 40 + b"\r\nNO CARRIER\r\n"
            ct1, ct2 = srv.record(one), srv.record(two)
            srv.sock.sendall(ct1[:1000])
            time.sleep(0.3)
            assert escape(host, advance) == OK
            srv.sock.sendall(ct1[1000:])
            time.sleep(0.3)
            assert host.quiet_for(0.2) == b""                  # parked: waits for ATO
            assert ato(host) == CONNECT
            assert host.read_exactly(len(one)) == one
            srv.sock.sendall(ct2[:7])                          # not even a whole header
            time.sleep(0.2)
            assert host.quiet_for(0.1) == b""
            srv.sock.sendall(ct2[7:] + srv.close_notify())
            assert host.read_exactly(len(two)) == two
            assert host.read_until(CONNECT_OR_ERROR, timeout=5) == NO_CARRIER
            assert host.quiet_for(0.3) == b""
            assert ato(host) == NO_CARRIER
            alive(host)
        finally:
            srv.close()


# -- the PDP context goes while parked ----------------------------------------------------------------
@pytest.mark.parametrize("cmd,waiting", [("AT+QIDEACT=1", b"parked bytes"), ("AT+CFUN=0", b"")])
def test_context_lost_while_parked_falls_back_and_ato_is_no_carrier(emulator, sink, cmd, waiting):
    host, advance, port, server = sink
    host.write(b"up")
    assert received(server, 2) == b"up"
    assert escape(host, advance) == OK
    if waiting:
        server.conn.send(waiting)
        time.sleep(0.3)
    assert host.at(cmd) == OK
    urcs = (b'\r\n+QSSLURC: "recv",4\r\n' if waiting else b"") + b'\r\n+QSSLURC: "closed",4\r\n'
    assert host.read_until(b'"closed",4\r\n') == urcs
    assert ato(host) == NO_CARRIER
    state = host.at("AT+QSSLSTATE=4")
    mode = b"0" if waiting else b"2"                           # buffer fall-back only with data
    assert re.search(rb'\+QSSLSTATE: 4,"SSLClient","[^"]+",\d+,\d+,4,1,4,' + mode + b',', state), state
    if waiting:
        assert host.at("AT+QSSLRECV=4,100") == b"\r\n+QSSLRECV: %d\r\n" % len(waiting) + waiting + b"\r\n" + OK
    assert host.at("AT+QSSLCLOSE=4") == OK
    assert bytes(server.conn.received) == b"up"
    if cmd == "AT+CFUN=0":
        assert host.at("AT+CFUN=1") == OK
    alive(host)


# -- ML302: S12 shortened, "+" runs next to the escape, AT&D1 drop ---------------------------------
def test_ml302_short_guard_plus_runs_then_escape_and_andd1_drop(emulator, ml302_strict):
    host, advance, _ = ml302_strict
    assert host.at("ATS12=25") == OK                           # 0.5 s
    assert host.at("AT&D1") == OK
    with TlsServer(mode="echo", legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        connect(host, f'AT+QSSLOPEN=0,0,"{HOST}",{PORT},1')
        server.wait_handshake()
        host.write(b"x+")                                      # "+" right after data
        advance(0.6)
        host.write(b"++")                                      # only two after the silence
        advance(0.6)
        assert host.read_exactly(4) == b"x+++"                 # all data, echoed
        host.write(b"+++")
        advance(0.6)
        assert host.read_until(FINAL) == OK
        assert ato(host) == CONNECT
        host.write(b"y")
        assert host.read_exactly(1) == b"y"
        assert emulator.control("dtr", level=0) == {"ok": True}
        assert host.read_until(FINAL) == OK
        assert emulator.control("dtr", level=1) == {"ok": True}
        assert ato(host) == CONNECT
        host.write(b"z")
        assert host.read_exactly(1) == b"z"
        assert escape(host, advance) == OK
        assert bytes(server.conn.received) == b"x+++yz"
        assert host.at("AT") == OK


# -- S12 at its maximum (255 = 5.1 s) on the modem clock -------------------------------------------
def test_s12_maximum_guard_edges(emulator, sink):
    host, advance, port, server = sink
    assert escape(host, advance) == OK
    assert host.at("ATS12=256") == b"\r\nERROR\r\n"
    assert host.at("ATS12=255") == OK
    assert host.at("ATS12?") == b"\r\n255\r\n" + OK
    assert ato(host) == CONNECT
    host.write(b"a")
    advance(5.09)                                              # 0.01 s short of the guard time
    host.write(b"+++")
    advance(5.2)
    assert host.quiet_for(0.3) == b""                          # data
    advance(5.1)
    host.write(b"+++")
    advance(5.09)
    assert host.quiet_for(0.3) == b""                          # the silence after not over yet
    advance(0.01)
    assert host.read_until(FINAL) == OK
    assert bytes(server.conn.received) == b"a+++"


# -- opening the parked id again (either socket kind: one id pool) leaves ATO to it ------------------
def test_reopening_the_parked_id_is_563_and_ato_still_resumes(emulator, sink):
    host, advance, port, server = sink
    assert escape(host, advance) == OK
    server.conn.send(b"waiting")
    host.write(f'AT+QSSLOPEN=1,1,4,"{HOST}",{PORT},2\r')
    assert host.read_until(CONNECT_OR_ERROR) == b"\r\nERROR\r\n"
    assert re.match(rb"\r\n\+QIGETERROR: 563,", host.at("AT+QIGETERROR"))
    host.write('AT+QIOPEN=1,4,"TCP","10.1.1.1",80,0,2\r')
    assert host.read_until(CONNECT_OR_ERROR) == b"\r\nERROR\r\n"
    assert re.match(rb"\r\n\+QIGETERROR: 563,", host.at("AT+QIGETERROR"))
    assert ato(host) == CONNECT
    assert host.read_exactly(7) == b"waiting"
    host.write(b"still the same")
    assert received(server, 14) == b"still the same"
    assert len(server.connections) == 1
    assert escape(host, advance) == OK
    alive(host)


# -- a truncated or forged record after a good one, online and parked ------------------------------
def bio_session(emulator, host, ts):
    srv = BioServer(ts.context)
    emulator.router.add_map(HOST, PORT, "127.0.0.1", srv.port)
    connect(host)
    assert srv.ready.wait(5)
    return srv


def server_reads(srv, timeout: float = 3) -> tuple[bytes, str]:
    """What the server's SSL object decrypts from the client until an error or EOF: (data,
    the SSL error's reason or "eof")."""
    srv.sock.settimeout(timeout)
    data = bytearray()
    while True:
        try:
            chunk = srv.sock.recv(65536)
        except socket.timeout:
            return bytes(data), "timeout"
        if not chunk:
            return bytes(data), "eof"
        srv.inc.write(chunk)
        while True:
            try:
                data += srv.obj.read(65536)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                return bytes(data), "close_notify"
            except ssl.SSLError as e:
                return bytes(data), e.reason or str(e)


@pytest.mark.parametrize("parked", [False, True], ids=["online", "parked"])
def test_truncated_record_then_fin_ends_after_the_whole_records(emulator, ec2x_strict, parked):
    host, advance, _ = ec2x_strict
    with TlsServer(legacy=True) as ts:
        srv = bio_session(emulator, host, ts)
        try:
            one, two = b"1" * 5000, b"2" * 5000
            ct1, ct2 = srv.record(one), srv.record(two)
            if parked:
                assert escape(host, advance) == OK
            srv.sock.sendall(ct1 + ct2[:100])
            srv.sock.shutdown(socket.SHUT_WR)
            if parked:
                assert host.read_until(b'"closed",4\r\n') == \
                    b'\r\n+QSSLURC: "recv",4\r\n\r\n+QSSLURC: "closed",4\r\n'
                assert ato(host) == NO_CARRIER
                assert qsslrecv_all(host, 4) == one
            else:
                assert host.read_until(CONNECT_OR_ERROR) == one + NO_CARRIER
            assert host.quiet_for(0.2) == b""
            assert ato(host) == NO_CARRIER
            assert host.at("AT+QSSLCLOSE=4") == OK
            alive(host)
        finally:
            srv.close()


@pytest.mark.parametrize("parked", [False, True], ids=["online", "parked"])
def test_forged_record_after_a_good_one_is_bad_record_mac_and_no_carrier(emulator, ec2x_strict, parked):
    host, advance, _ = ec2x_strict
    with TlsServer(legacy=True) as ts:
        srv = bio_session(emulator, host, ts)
        try:
            one, two = b"1" * 5000, b"2" * 5000
            ct1, ct2 = srv.record(one), bytearray(srv.record(two))
            ct2[200] ^= 1
            host.write(b"up")
            # the modem has sent "up" before the forged record comes (else, read by a loaded
            # emulator after the record, "up" goes down with the connection: h_race saw it)
            assert select.select([srv.sock], [], [], 10)[0]
            if parked:
                assert escape(host, advance) == OK
            srv.sock.sendall(ct1 + bytes(ct2))
            if parked:
                assert host.read_until(b'"closed",4\r\n') == \
                    b'\r\n+QSSLURC: "recv",4\r\n\r\n+QSSLURC: "closed",4\r\n'
                assert ato(host) == NO_CARRIER
                assert qsslrecv_all(host, 4) == one
            else:
                assert host.read_until(CONNECT_OR_ERROR) == one + NO_CARRIER
            data, end = server_reads(srv)
            assert data == b"up"
            assert "BAD_RECORD_MAC" in end.upper(), end          # the module's alert
            assert host.quiet_for(0.2) == b""
            assert host.at("AT+QSSLCLOSE=4") == OK
            alive(host)
        finally:
            srv.close()


# -- UDP transparent: held "+" and the transpktsize / transwaittm packets (datagrams show them) -------
def test_udp_held_plus_joins_packets_on_the_modem_clock(emulator, ec2x_strict):
    """transpktsize 4, transwaittm 2 s, S12 1 s.  "abc", 1.1 s, "+" (held: may be an escape),
    "x": "abc+" is a full packet at once, "x" waits 2 s from its arrival.  "def", 1.1 s, "+"
    held past the tail's deadline: "def" leaves alone at 2 s, the "+" (data at 2.1 s) leaves 2 s
    after its own arrival."""
    from emulator.testing.peers import UdpEchoServer
    from tests.e2e.socket_support import UDP_HOST, UDP_PORT

    host, advance, _ = ec2x_strict
    assert host.at('AT+QICFG="transpktsize",4') == OK
    assert host.at('AT+QICFG="transwaittm",20') == OK

    with UdpEchoServer(echo=False) as server:
        def datagrams():
            time.sleep(0.3)
            return [d for _, d in server.log]

        emulator.router.add_map(UDP_HOST, UDP_PORT, "127.0.0.1", server.port)
        tcp_transparent(host, "UDP", UDP_HOST, UDP_PORT)
        host.write(b"abc")
        advance(1.1)
        host.write(b"+")
        advance(0.1)
        assert datagrams() == []
        host.write(b"x")                                       # t 1.2
        advance(0.1)
        assert datagrams() == [b"abc+"]
        advance(1.85)                                          # t 3.15
        assert datagrams() == [b"abc+"]
        advance(0.1)                                           # t 3.25
        assert datagrams() == [b"abc+", b"x"]
        advance(2)
        host.write(b"def")                                     # t0
        advance(1.1)
        host.write(b"+")                                       # t0 + 1.1
        advance(0.85)                                          # t0 + 1.95
        assert datagrams() == [b"abc+", b"x"]
        advance(0.1)                                           # t0 + 2.05
        assert datagrams() == [b"abc+", b"x", b"def"]
        advance(0.1)                                           # t0 + 2.15: "+" is data now
        assert datagrams() == [b"abc+", b"x", b"def"]
        advance(0.9)                                           # t0 + 3.05
        assert datagrams() == [b"abc+", b"x", b"def"]
        advance(0.1)                                           # t0 + 3.15
        assert datagrams() == [b"abc+", b"x", b"def", b"+"]
        assert escape(host, advance) == OK
        assert host.at("AT") == OK
        assert datagrams() == [b"abc+", b"x", b"def", b"+"]


# -- a guarded "+++" while the transparent open still waits for its handshake ------------------------
def test_guarded_plus_plus_plus_during_the_handshake_is_data_after_connect(emulator, ec2x_strict):
    """The server holds its ServerHello back; the host writes "+++" with a second of silence on
    each side, then "AT\\r": no OK, no answer; once the handshake ends, CONNECT and all of it
    reaches the server as data (the rule for bytes written before CONNECT); a real escape
    afterwards works."""
    host, advance, _ = ec2x_strict

    class Gated(BioServer):
        def __init__(self, ctx):
            self.gate = threading.Event()
            super().__init__(ctx)

        def _run(self):
            self.gate.wait(10)
            super()._run()

    with TlsServer(legacy=True) as ts:
        srv = Gated(ts.context)
        try:
            emulator.router.add_map(HOST, PORT, "127.0.0.1", srv.port)
            host.write(f'AT+QSSLOPEN=1,1,4,"{HOST}",{PORT},2\r')
            time.sleep(0.3)
            advance(1.1)
            host.write(b"+++")
            advance(1.1)
            assert host.quiet_for(0.3) == b""
            host.write(b"AT\r")
            advance(0.1)
            assert host.quiet_for(0.2) == b""
            srv.gate.set()
            assert srv.ready.wait(5)
            assert host.read_until(CONNECT_OR_ERROR) == CONNECT
            assert host.quiet_for(0.2) == b""
            assert server_reads(srv, 1) == (b"+++AT\r", "timeout")
            assert escape(host, advance) == OK
            assert host.at("AT") == OK
        finally:
            srv.close()
