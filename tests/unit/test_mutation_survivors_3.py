"""Tests from a third manual mutation-testing pass (the first two: tests/e2e/test_mutation_survivors.py,
tests/unit/test_mutation_survivors_2.py), over how received data reach the host
(emulator/sockets/delivery.py: buffer mode, direct push and its flow control, transparent
mode's flush, SocketLink).  Each test pins a behaviour that a small change to that module
(the mutant named in its docstring) left the socket, transparent-mode and flow-control e2e
tests passing on -- or, for the packet tests, that only a slow e2e test caught indirectly; the
expected values come from docs/behaviour.md and the EC2x SSL note, not from the emulator's
current output.  No pty, no loop, no network: a sans-IO Modem on a StubPort whose
output backlog the test sets, and SslSockets put in the CONNECTED state by hand, their received
plaintext handed in as the network would (the modem clock is manual)."""
from __future__ import annotations

import gc
import weakref

import pytest

from emulator.io.transport import HIGH_WATER
from emulator.modem.modem import Modem
from emulator.modem.profile import load_profile
from emulator.sockets.service import ssl_service
from emulator.sockets.ssl_socket import CLOSING, SslSocket
from emulator.sockets.tcpip import TcpipSocket, tcpip_service
from emulator.testing.port import StubPort


class Bench:
    """An EC2x Modem with no pty (ATE0 sent): .backlog is the output the host has not read
    (what the port answers), .run(bytes) feeds them and returns the output since the last
    call; .connected(id, mode) puts a connected SSL socket in the service."""

    def __init__(self) -> None:
        self.backlog = 0
        self.out = bytearray()
        self.port = StubPort(backlog=lambda: self.backlog)
        self.modem = Modem(load_profile("ec2x"))
        self.modem.interpreter.strict = True
        self.modem.attach(self.out.extend, port=self.port)
        assert self.run(b"ATE0\r") == b"ATE0\r\r\nOK\r\n"
        self.svc = ssl_service(self.modem)

    def run(self, data: bytes = b"") -> bytes:
        if data:
            self.modem.feed(data)
        out = bytes(self.out)
        self.out.clear()
        return out

    def connected(self, client_id: int, mode: str, tcp: bool = False) -> SslSocket:
        """A socket whose handshake is over, in access mode `mode` (buffer, push, online);
        tcp: an AT+QIOPEN "TCP" socket instead of an SSL one.  What it sends is kept in .sent
        (its send backlog: .unsent)."""
        if tcp:
            svc = tcpip_service(self.modem)
            sock = TcpipSocket(svc, client_id, pdp_id=1, host="h.test", port=7000, service_type="TCP",
                               delivery=svc.deliveries[mode], recv_limit=svc.recv_buffer,
                               timers=self.modem.timers)
        else:
            svc = self.svc
            sock = SslSocket(svc, client_id, pdp_id=1, ctx_id=1, host="h.test", port=443,
                             delivery=svc.deliveries[mode],
                             recv_limit=self.modem.profile["ssl.recv_buffer"], timers=self.modem.timers)
        sock._go("open")
        sock._go("established")
        sock.sent, sock.unsent = [], 0
        sock.send = lambda data, to=None: sock.sent.append(bytes(data))
        sock.send_backlog = lambda: sock.unsent
        svc.sockets[client_id] = sock
        return sock

    def escape(self) -> bytes:
        """The note's "+++" with a second of silence either side (manual time)."""
        self.modem.timers.advance(1.1)
        self.modem.feed(b"+++")
        self.modem.timers.advance(1.1)
        return self.run()


@pytest.fixture
def bench() -> Bench:
    return Bench()


def push_urc(client_id: int, data: bytes) -> bytes:
    """A direct-push URC as written: header, the data, their closing CR LF."""
    return b'\r\n+QSSLURC: "recv",%d,%d\r\n' % (client_id, len(data)) + data + b"\r\n"


# -- direct push (PushDelivery) ------------------------------------------------------------------
# docs/behaviour.md, "SSL sockets (EC2x)", Direct push: a URC is written whole, and only while
# the host is not inside a command or a "> " prompt and at most 64 KiB of output waits for it
# on the pty; otherwise the data stay in the socket ... and pushing resumes when the port is
# free again (port_idle) or the host has read the backlog down (output_drained): events, not
# polling.  Every byte arrives once, in order.
def test_push_goes_out_with_exactly_64_kib_waiting_and_not_one_byte_more(bench):
    """Mutant: PushDelivery._host_keeps_up's `output_backlog() <= HIGH_WATER` -> `<`.  "At
    most 64 KiB of output waits": with exactly 64 KiB unread the URC goes; one byte more and
    the data stay in the socket."""
    assert HIGH_WATER == 64 * 1024
    sock = bench.connected(1, "push")
    bench.backlog = HIGH_WATER
    sock._received(b"at the limit")
    assert bench.run() == push_urc(1, b"at the limit")
    bench.backlog = HIGH_WATER + 1
    sock._received(b"over it")
    assert bench.run() == b"" and sock.inbox == b"over it"


def test_push_data_stay_in_the_socket_while_a_data_prompt_is_open(bench):
    """Mutant: PushDelivery._host_keeps_up without `interpreter.idle` (push URCs raised
    inside a command or a prompt, to wait in the interpreter's URC queue).  The data must stay
    in the socket meanwhile -- there ssl.recv_buffer holds the server back; the URC queue has
    no limit -- and go out, whole, once the upload's answer is written."""
    sock = bench.connected(1, "push")
    assert bench.run(b'AT+QFUPL="a.txt",10\r') == b"\r\nCONNECT\r\n"
    sock._received(b"during the upload")
    assert bench.run() == b""
    assert sock.inbox == b"during the upload"                  # not taken out of the socket
    out = bench.run(b"0123456789")
    assert out.startswith(b"\r\n+QFUPL: 10,") and out.endswith(b"\r\nOK\r\n" + push_urc(1, b"during the upload"))
    assert sock.inbox == b""


def test_push_stops_between_sockets_once_the_backlog_passes_64_kib(bench):
    """Mutant: PushDelivery.push's round over the holding sockets without its own
    `_host_keeps_up()` check (one URC more per socket after the backlog went past 64 KiB).
    Two sockets hold data and the host catches up to 100 bytes under the limit: socket 1's
    URC goes (the backlog was within the limit), socket 2's waits until the host has read
    the backlog down."""
    first, second = bench.connected(1, "push"), bench.connected(2, "push")
    bench.backlog = HIGH_WATER + 1
    first._received(b"a" * 300)
    second._received(b"b" * 300)
    assert bench.run() == b""
    bench.backlog = HIGH_WATER - 100
    bench.port._backlog = lambda: bench.backlog + len(bench.out)     # what is written waits too
    bench.modem.output_drained()
    assert bench.run() == push_urc(1, b"a" * 300)
    assert second.inbox == b"b" * 300
    bench.backlog = 0
    bench.modem.output_drained()
    assert bench.run() == push_urc(2, b"b" * 300)


def test_push_resumes_when_the_host_hangs_up(bench):
    """Mutant: PushDelivery not listening to the modem's "hangup" event.  The host stopped
    reading with more than 64 KiB unread, so the data wait in the socket; then it closes the
    port: its unread output is gone with it (docs/behaviour.md: the next host to open the
    device meets command state), so the held data are pushed at once -- the next host must
    not have to send a command (port_idle) before they move again."""
    sock = bench.connected(1, "push")
    bench.backlog = HIGH_WATER + 1
    sock._received(b"held back")
    assert bench.run() == b""
    bench.backlog = 0
    bench.modem.host_hangup()
    assert bench.run() == push_urc(1, b"held back")


# -- transparent mode (OnlineDelivery, SocketLink) -----------------------------------------------
# docs/behaviour.md, "Transparent access mode": flow control, end to end -- when the TLS
# connection has more than ssl.online_buffer (256 KiB) the kernel has not taken, the emulator
# stops reading the pty (the pty's own buffer then blocks the host's writes, as RTS/CTS would);
# leaving online mode ("+++", DTR with AT&D1, the host closing the device) keeps the
# connection open and the port back in command mode.
def online_socket(bench: Bench, client_id: int = 1, tcp: bool = False) -> SslSocket:
    """A connected socket switched to transparent mode (AT+QISWTMD=<id>,2: CONNECT)."""
    sock = bench.connected(client_id, "buffer", tcp)
    assert bench.run(b"AT+QISWTMD=%d,2\r" % client_id) == b"\r\nCONNECT\r\n"
    return sock


def test_leaving_online_mode_reads_the_port_again_while_the_connection_is_full(bench):
    """Mutant: SocketLink.escaped without `self._writable()` (the port's input stays paused
    for the full connection after online mode ended).  A DTR drop with AT&D1 leaves online
    mode like "+++" (OK, the connection stays); the host is in command mode and its commands
    must be read, although the server has not taken the connection's backlog yet.  The same
    when the host closes the device while online: the next host's commands are read."""
    limit = bench.svc.online_buffer
    assert limit == 256 * 1024
    assert bench.run(b"AT&D1\r") == b"\r\nOK\r\n"
    sock = online_socket(bench)
    sock.unsent = limit + 1                                   # the server reads nothing
    bench.modem.feed(b"x" * 100)
    assert sock.sent == [b"x" * 100]
    assert bench.modem.input_held("online") and bench.port.reading[-1] is False
    bench.modem.set_dtr(0)
    assert bench.run() == b"\r\nOK\r\n"
    assert not bench.modem.input_held("online") and bench.port.reading[-1] is True
    bench.modem.set_dtr(1)
    assert bench.run(b"AT\r") == b"\r\nOK\r\n"

    assert bench.run(b"ATO\r") == b"\r\nCONNECT\r\n"
    bench.modem.feed(b"y")
    assert bench.modem.input_held("online")
    bench.modem.host_hangup()
    assert not bench.modem.input_held("online") and bench.port.reading[-1] is True
    assert sock.sent == [b"x" * 100, b"y"] and sock.state is not CLOSING


# -- what the strategies keep for sockets that are gone ------------------------------------------
# docs/behaviour.md, "SSL sockets (EC2x)": a close (AT+QSSLCLOSE ...) takes effect when the
# command runs ... a reboot also drops connections; OnlineDelivery.release's docstring: without
# dropping what is held for a socket, every closed socket stayed in its strategy (with its
# buffers and TLS context) until some later event happened to clean up.  gc.collect() breaks the
# socket's own cycles; a socket still referenced afterwards is held by something that outlived
# it.
def gone(ref: weakref.ref) -> bool:
    gc.collect()
    return ref() is None


def test_a_reboot_lets_go_of_a_transparent_socket(bench):
    """Mutant: OnlineDelivery.forget without `self._links.clear()` (every socket's link, and
    through it the socket, kept after a restart until the port's output next drained).
    Socket 1 went online and left with "+++"; AT+CFUN=1,1-like restart (Modem.reboot):
    socket 1 is gone at once -- the interpreter's last online link (ATO's target) went with
    the restart too (it kept the socket until the next online session before), and ATO is
    NO CARRIER; a second socket then goes online as before."""
    ref = weakref.ref(online_socket(bench, 1))
    assert bench.escape() == b"\r\nOK\r\n"
    bench.modem.reboot(0)
    assert bench.svc.sockets == {}
    assert gone(ref)
    assert bench.run(b"ATE0\r") == b"ATE0\r\r\nOK\r\n"
    assert bench.run(b"ATO\r") == b"\r\nNO CARRIER\r\n"
    online_socket(bench, 2)


def test_a_reboot_lets_go_of_a_push_socket_whose_close_waited_for_its_data(bench):
    """Mutant: PushDelivery.forget not clearing the "closed" URCs waiting for held data.  A
    push socket's peer closed while its data were held back (the host not reading); a restart
    drops the socket: nothing may keep it."""
    sock = bench.connected(1, "push")
    bench.backlog = HIGH_WATER + 1
    sock._received(b"held")
    sock._peer_closed("peer closed TCP without close_notify (FIN)")
    assert bench.run() == b"" and sock.state is CLOSING
    ref = weakref.ref(sock)
    del sock
    bench.modem.reboot(0)
    assert gone(ref)



# -- transparent mode's packets (SocketLink.send, AT+QICFG "transpktsize" / "transwaittm") -------
# docs/behaviour.md, "TCP/UDP sockets (EC2x)", AT+QICFG: in transparent mode an AT+QIOPEN socket
# sends the host's bytes in packets of transpktsize bytes; fewer bytes wait transwaittm x 100 ms,
# counted from the oldest of them (the wait does not restart with each byte), then go as one
# packet; transwaittm 0 sends at once.  "+++" sends what waited before the port answers OK; a
# closed connection, an AT&D2 hang-up or a restart (the power goes) drops it.
def packet_socket(bench: Bench, size: int, wait: int) -> SslSocket:
    line = b'AT+QICFG="transpktsize",%d;+QICFG="transwaittm",%d\r' % (size, wait)
    assert bench.run(line) == b"\r\nOK\r\n"
    return online_socket(bench, 3, tcp=True)


def test_a_whole_packet_goes_at_once(bench):
    """Mutants: SocketLink.send's `len(unsent) >= size` -> `>`, and its packet loop's range
    ending one packet early (`len(unsent) - size + 1` -> `len(unsent) - size`).  Exactly
    transpktsize bytes are a packet: it goes at once; 8 bytes with transpktsize 4 are two."""
    sock = packet_socket(bench, 4, 2)
    bench.modem.feed(b"abcd")
    assert sock.sent == [b"abcd"]
    bench.modem.feed(b"efghijkl")
    assert sock.sent == [b"abcd", b"efgh", b"ijkl"]
    bench.modem.feed(b"mnopqrstu")
    assert sock.sent == [b"abcd", b"efgh", b"ijkl", b"mnop", b"qrst"]
    bench.modem.timers.advance(0.2)
    assert sock.sent[5:] == [b"u"]


def test_the_wait_counts_from_the_oldest_byte_still_waiting(bench):
    """Mutants: SocketLink.send restarting the wait at every write (`elif unsent and
    self._unsent_timer is None` without its timer test), and keeping the old wait after a
    packet went (`self._stop_unsent_timer()` after the packets dropped).  transwaittm 2
    (200 ms), transpktsize 4: "a", then "b" 100 ms later go together 200 ms after "a"; "x",
    then "yzwv" 150 ms later: "xyzw" is a packet and goes at once, and "v" -- now the oldest
    byte waiting, come at 150 ms -- waits its own 200 ms."""
    sock = packet_socket(bench, 4, 2)
    bench.modem.feed(b"a")
    bench.modem.timers.advance(0.1)
    bench.modem.feed(b"b")
    bench.modem.timers.advance(0.1)
    assert sock.sent == [b"ab"]

    bench.modem.feed(b"x")
    bench.modem.timers.advance(0.15)
    bench.modem.feed(b"yzwv")
    assert sock.sent == [b"ab", b"xyzw"]
    bench.modem.timers.advance(0.1)                 # 250 ms after "x", 100 ms after "v"
    assert sock.sent == [b"ab", b"xyzw"]
    bench.modem.timers.advance(0.1)
    assert sock.sent == [b"ab", b"xyzw", b"v"]


def test_transwaittm_0_sends_at_once(bench):
    """Mutant: SocketLink.send's `wait <= 0` -> `wait < 0` (a zero wait still a timer).
    transwaittm 0: the host's bytes go at once, without any time passing."""
    sock = packet_socket(bench, 1024, 0)
    bench.modem.feed(b"now")
    assert sock.sent == [b"now"]


def test_plus_plus_plus_sends_what_waited_for_a_packet(bench):
    """Mutant: SocketLink.escaped without `self.flush_unsent()` (the bytes waiting for a
    packet stay until their wait ends, after the OK).  transwaittm 20 (2 s), guard time 0.5 s
    (ATS12=25): "tail", then "+++" -> OK; "tail" went into the connection when the port
    answered, before transwaittm."""
    assert bench.run(b"ATS12=25\r") == b"\r\nOK\r\n"
    sock = packet_socket(bench, 1024, 20)
    bench.modem.feed(b"tail")
    bench.modem.timers.advance(0.6)
    bench.modem.feed(b"+++")
    assert sock.sent == []
    bench.modem.timers.advance(0.6)
    assert bench.run() == b"\r\nOK\r\n"
    assert sock.sent == [b"tail"]
    bench.modem.timers.advance(3)
    assert sock.sent == [b"tail"]


def test_a_restart_drops_what_waited_for_a_packet(bench):
    """Mutant: SocketLink.power_lost not clearing the bytes waiting for a packet (the
    interpreter's restart then leaves online mode through escaped(), which sends them).  A
    restart in online mode: the power goes, and the bytes with it -- none reaches the server."""
    sock = packet_socket(bench, 1024, 2)
    bench.modem.feed(b"0123456789")
    bench.modem.timers.advance(0.2)
    assert sock.sent == [b"0123456789"]
    bench.modem.feed(b"lost")
    bench.modem.reboot(0)
    bench.modem.timers.advance(1)
    assert sock.sent == [b"0123456789"]
