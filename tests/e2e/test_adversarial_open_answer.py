"""The open's success answer given in the network callback that read the server's last
flight (fcbcbfe: SslSocket._pump -> _established while the open's task waits), attacked
through the pty as host software and hostile servers would: the server's Finished with
application data, close_notify, FIN or RST in the same TCP segment, in buffer, push and
transparent modes (EC2x and ML302); session resumption (the server's Finished first);
renegotiation right after the open; DTLS; AT+QIOPEN; the host closing the socket, the
port or asking AT+QSSLSTATE around the answer; the negotiate timer; many opens at once.
Checked: exact bytes on the pty, one answer per open, URCs after it, nothing lost, no
ERROR log record or traceback (ec2x_strict / ml302_strict)."""
from __future__ import annotations

import re
import socket
import ssl
import struct
import threading
import time

import pytest

from emulator.testing.host import Host

TLS_HOST = "flight.example"


# -- a server that decides what goes in the segment of its last handshake flight ----------
class FlightServer:
    """A TLS 1.2 server (Python ssl over memory BIOs on a raw socket, one thread per client)
    that sends its last handshake flight (NewSessionTicket, CCS, Finished) together with
    `tail` in ONE send(): tail is a list of b"data", "close_notify"; then `after`:
    "fin" (shutdown SHUT_WR), "rst" (SO_LINGER 0 close), "echo" (echo what comes), "hold"
    (keep the connection, read and discard).  hold_finished: an Event the server waits for
    before sending that flight (the client's Finished is in by then)."""

    def __init__(self, tail=(), after: str = "echo", hold_finished: threading.Event | None = None,
                 cache: bool = True, max_version=ssl.TLSVersion.TLSv1_2) -> None:
        from emulator.testing.peers import default_pki
        self.tail, self.after, self.hold = list(tail), after, hold_finished
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.maximum_version = max_version
        self.ctx.set_ciphers("ALL:@SECLEVEL=0")
        default_pki().server.configure_cert(self.ctx)
        if not cache:
            self.ctx.options |= ssl.OP_NO_TICKET
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.handshakes: list[dict] = []
        self.received = bytearray()
        self.errors: list[str] = []
        self.flight_sent = threading.Event()
        self.finished_in = threading.Event()      # the client's Finished has been read
        self._closed = False
        self._cond = threading.Condition()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self._run(conn)
        except (OSError, ssl.SSLError) as exc:
            if not self._closed:
                self.errors.append(repr(exc))

    def _run(self, conn: socket.socket) -> None:
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = self.ctx.wrap_bio(inc, out, server_side=True)
        conn.settimeout(10)
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                pending = out.read()
                if pending:
                    conn.sendall(pending)
                data = conn.recv(65536)
                if not data:
                    return
                inc.write(data)
        # The client's Finished is in: everything below leaves in one send().
        self.finished_in.set()
        if self.hold is not None:
            self.hold.wait(10)
        with self._cond:
            self.handshakes.append({"reused": tls.session_reused, "version": tls.version()})
            self._cond.notify_all()
        flight = b""
        for item in self.tail:
            if item == "close_notify":
                try:
                    tls.unwrap()
                except ssl.SSLError:
                    pass
            elif isinstance(item, tuple):         # ("raw", bytes): as is, after what is queued
                flight += out.read() + item[1]
            else:
                tls.write(item)
        conn.sendall(flight + out.read())
        self.flight_sent.set()
        if self.after == "fin":
            conn.shutdown(socket.SHUT_WR)
            self._drain(conn, tls, inc, echo=False)
        elif self.after == "rst":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
        else:
            self._drain(conn, tls, inc, echo=self.after == "echo", out=out)

    def _drain(self, conn, tls, inc, echo: bool, out=None) -> None:
        # What came in the handshake's last read behind the client's Finished (a host that
        # sends the instant it sees the answer, this thread slow to read) is in the BIO
        # already: read it before waiting on the socket for more.
        pending = inc.pending > 0
        while True:
            if not pending:
                try:
                    data = conn.recv(65536)
                except (OSError, socket.timeout):
                    return
                if not data:
                    return
                inc.write(data)
            pending = False
            plain, ended = b"", False
            try:
                while True:
                    chunk = tls.read(65536)
                    if not chunk:
                        ended = True
                        break
                    plain += chunk
            except ssl.SSLWantReadError:
                pass
            except (ssl.SSLZeroReturnError, ssl.SSLError):
                ended = True
            with self._cond:
                self.received += plain
                self._cond.notify_all()
            if echo and plain and out is not None:
                tls.write(plain)
                conn.sendall(out.read())
            if ended:                          # the client's close_notify: our FIN
                conn.close()
                return

    def wait(self, predicate, timeout: float = 5.0):
        with self._cond:
            ok = self._cond.wait_for(predicate, timeout)
        assert ok, (self.handshakes, bytes(self.received), self.errors)

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def route(emulator, server, name: str = TLS_HOST, port: int = 443) -> None:
    emulator.router.add_map(name, port, "127.0.0.1", server.port)


def bytewise(host: Host, line: str, eol: str = "\r\n") -> None:
    """A host that writes its command one byte per write()."""
    for b in (line + eol).encode():
        host.write(bytes([b]))


def read_pushed(host: Host, client_id: int, size: int) -> bytes:
    """`size` bytes of direct-push data: each +QSSLURC: "recv",<id>,<len> carries at most
    recv_max bytes, then CR LF; the framing of every URC is checked on the way."""
    urc = re.compile(rb'\r\n\+QSSLURC: "recv",%d,(\d+)\r\n' % client_id)
    data = b""
    while len(data) < size:
        line = host.read_until(urc, timeout=5)
        m = urc.fullmatch(line)
        assert m, line
        data += host.read_exactly(int(m.group(1)), timeout=5)
        assert host.read_exactly(2, timeout=5) == b"\r\n"     # the push's end
    return data


def open_line(client_id: int, mode: int, name: str = TLS_HOST, port: int = 443, ctx: int = 1) -> str:
    return f'AT+QSSLOPEN=1,{ctx},{client_id},"{name}",{port},{mode}'


@pytest.fixture
def modem(ec2x_strict):
    return ec2x_strict


PAYLOAD = b"FIRST-RECORD:" + bytes(range(256)) * 3


# -- data in the segment of the server's Finished ---------------------------------------------
def test_buffer_mode_data_with_finished_exact_bytes(modem, emulator):
    host, advance, port = modem
    with FlightServer(tail=[PAYLOAD]) as server:
        route(emulator, server)
        for client_id in (0, 11):
            bytewise(host, open_line(client_id, 0))
            want = (b"\r\nOK\r\n\r\n+QSSLOPEN: %d,0\r\n\r\n+QSSLURC: \"recv\",%d\r\n" % (client_id, client_id))
            assert host.read_exactly(len(want), timeout=5) == want
            got = host.at(f"AT+QSSLRECV={client_id},1500")
            assert got == b"\r\n+QSSLRECV: %d\r\n" % len(PAYLOAD) + PAYLOAD + b"\r\n\r\nOK\r\n"
            assert host.at(f"AT+QSSLRECV={client_id},1500") == b"\r\n+QSSLRECV: 0\r\n\r\nOK\r\n"
            assert host.send_data(client_id, b"ping") == b"\r\nSEND OK\r\n"
            want = b'\r\n+QSSLURC: "recv",%d\r\n' % client_id
            assert host.read_exactly(len(want), timeout=5) == want
            assert host.at(f"AT+QSSLRECV={client_id},1500") == b"\r\n+QSSLRECV: 4\r\nping\r\n\r\nOK\r\n"
            assert host.at(f"AT+QSSLCLOSE={client_id}") == b"\r\nOK\r\n"
            assert host.quiet_for(0.1) == b""


def test_push_mode_data_with_finished_exact_bytes(modem, emulator):
    host, advance, port = modem
    with FlightServer(tail=[PAYLOAD]) as server:
        route(emulator, server)
        bytewise(host, open_line(3, 1))
        head = b'\r\nOK\r\n\r\n+QSSLOPEN: 3,0\r\n'
        assert host.read_exactly(len(head), timeout=5) == head
        assert read_pushed(host, 3, len(PAYLOAD)) == PAYLOAD
        assert host.at("AT+QSSLCLOSE=3") == b"\r\nOK\r\n"
        assert host.quiet_for(0.1) == b""


def test_transparent_data_with_finished_follows_connect(modem, emulator):
    host, advance, port = modem
    with FlightServer(tail=[PAYLOAD]) as server:
        route(emulator, server)
        bytewise(host, open_line(4, 2))
        want = b"\r\nCONNECT\r\n" + PAYLOAD
        assert host.read_exactly(len(want), timeout=5) == want
        host.write(b"echo me")
        assert host.read_exactly(7, timeout=5) == b"echo me"
        advance(1.1)
        host.write(b"+++")
        advance(1.1)
        assert host.read_until(b"\r\nOK\r\n", timeout=5) == b"\r\nOK\r\n"
        assert host.at("AT+QSSLCLOSE=4") == b"\r\nOK\r\n"


@pytest.mark.parametrize("after", ["fin", "rst"])
@pytest.mark.parametrize("close_notify", [True, False])
def test_buffer_finished_data_then_end_in_one_segment(modem, emulator, after, close_notify):
    """Finished + data (+ close_notify) in one segment, then FIN or RST: the answer, the
    "recv" URC, the "closed" URC, in that order, once each; the data are still readable."""
    host, advance, port = modem
    tail = [PAYLOAD] + (["close_notify"] if close_notify else [])
    with FlightServer(tail=tail, after=after) as server:
        route(emulator, server)
        bytewise(host, open_line(2, 0))
        out = host.read_until(b'+QSSLURC: "closed",2\r\n', timeout=5)
        assert out == (b'\r\nOK\r\n\r\n+QSSLOPEN: 2,0\r\n\r\n+QSSLURC: "recv",2\r\n'
                       b'\r\n+QSSLURC: "closed",2\r\n'), out
        got = host.at("AT+QSSLRECV=2,1500")
        assert got == b"\r\n+QSSLRECV: %d\r\n" % len(PAYLOAD) + PAYLOAD + b"\r\n\r\nOK\r\n"
        state = host.at("AT+QSSLSTATE=2")
        assert re.search(rb'\+QSSLSTATE: 2,"SSLClient","flight\.example",443,\d+,4,', state), state
        assert host.at("AT+QSSLCLOSE=2") == b"\r\nOK\r\n"
        assert host.quiet_for(0.1) == b""


@pytest.mark.parametrize("after", ["fin", "rst"])
def test_push_finished_data_close_notify_then_end(modem, emulator, after):
    host, advance, port = modem
    data = b"pushed-with-finished"
    with FlightServer(tail=[data, "close_notify"], after=after) as server:
        route(emulator, server)
        bytewise(host, open_line(5, 1))
        out = host.read_until(b'+QSSLURC: "closed",5\r\n', timeout=5)
        assert out == (b'\r\nOK\r\n\r\n+QSSLOPEN: 5,0\r\n\r\n+QSSLURC: "recv",5,%d\r\n' % len(data) + data +
                       b'\r\n\r\n+QSSLURC: "closed",5\r\n'), out
        assert host.at("AT+QSSLCLOSE=5") == b"\r\nOK\r\n"
        assert host.quiet_for(0.1) == b""


@pytest.mark.parametrize("after", ["fin", "rst"])
@pytest.mark.parametrize("close_notify", [True, False])
def test_transparent_finished_data_then_end_gives_no_carrier(modem, emulator, after, close_notify):
    host, advance, port = modem
    tail = [PAYLOAD] + (["close_notify"] if close_notify else [])
    with FlightServer(tail=tail, after=after) as server:
        route(emulator, server)
        bytewise(host, open_line(6, 2))
        want = b"\r\nCONNECT\r\n" + PAYLOAD + b"\r\nNO CARRIER\r\n"
        assert host.read_until(b"\r\nNO CARRIER\r\n", timeout=5) == want
        assert host.at("AT") == b"\r\nOK\r\n"
        assert host.at("AT+QSSLCLOSE=6") == b"\r\nOK\r\n"
        assert host.quiet_for(0.1) == b""


# -- the host's next command right behind the answer -----------------------------------------
def test_state_and_send_right_after_the_answer(modem, emulator):
    """A host that fires AT+QSSLSTATE and AT+QSSLSEND the instant it sees the answer."""
    host, advance, port = modem
    with FlightServer(tail=[b"hello"], after="hold") as server:
        route(emulator, server)
        for i in range(5):
            host.write(open_line(7, 0) + "\r")
            host.read_until(b"+QSSLOPEN: 7,0\r\n", timeout=5)
            host.write("AT+QSSLSTATE=7\r")
            state = host.read_until(re.compile(rb"\r\n(OK|ERROR)\r\n"), timeout=5)
            assert re.search(rb'\+QSSLSTATE: 7,"SSLClient","flight\.example",443,\d+,2,1,7,0,', state), state
            assert host.send_data(7, b"x" * 10) == b"\r\nSEND OK\r\n"
            server.wait(lambda: len(server.received) >= 10 * (i + 1))
            assert host.at("AT+QSSLRECV=7,1500").count(b"hello") == 1
            assert host.at("AT+QSSLCLOSE=7") == b"\r\nOK\r\n"
            host.quiet_for(0.05)


def test_close_in_the_same_write_as_the_open_while_finished_is_held(modem, emulator):
    """AT+QSSLOPEN and AT+QSSLCLOSE of the same id in one write, the server's Finished sent
    after the close: no +QSSLOPEN answer ever (the id was closed), the id reopens cleanly."""
    host, advance, port = modem
    hold = threading.Event()
    with FlightServer(tail=[b"late"], hold_finished=hold) as server:
        route(emulator, server)
        host.write(open_line(8, 0) + "\r\n" + "AT+QSSLCLOSE=8\r\n")
        out = host.read_until(re.compile(rb"OK\r\n.*OK\r\n", re.S), timeout=5)
        assert out == b"\r\nOK\r\n\r\nOK\r\n", out
        hold.set()
        assert b"+QSSLOPEN" not in host.quiet_for(0.3)
    with FlightServer(tail=[b"again"]) as server:
        route(emulator, server)
        assert host.at(open_line(8, 0)) == b"\r\nOK\r\n"
        want = b'\r\n+QSSLOPEN: 8,0\r\n\r\n+QSSLURC: "recv",8\r\n'
        assert host.read_exactly(len(want), timeout=5) == want
        assert host.at("AT+QSSLCLOSE=8") == b"\r\nOK\r\n"


def test_close_right_after_handshake_in_flight(modem, emulator):
    """The host closes the socket while the server's last flight (with data) is on the
    wire: exactly zero or one +QSSLOPEN before the close's OK, nothing after it."""
    host, advance, port = modem
    for i in range(10):
        hold = threading.Event()
        with FlightServer(tail=[b"data" * 100], hold_finished=hold) as server:
            route(emulator, server)
            assert host.at(open_line(9, 0)) == b"\r\nOK\r\n"
            assert server.finished_in.wait(5)
            hold.set()
            time.sleep(0.0005 * i)
            out = host.at("AT+QSSLCLOSE=9")
            assert out.endswith(b"\r\nOK\r\n"), out
            assert out.count(b"+QSSLOPEN") <= 1
            assert out.replace(b'\r\n+QSSLOPEN: 9,0\r\n', b"").replace(b'\r\n+QSSLURC: "recv",9\r\n', b"") \
                == b"\r\nOK\r\n", out
            rest = host.quiet_for(0.05)
            assert rest == b"", rest


# -- session resumption: the server's Finished comes first --------------------------------------
def test_resumed_open_answers_once_and_data_flows(modem, emulator):
    host, advance, port = modem
    with FlightServer(tail=[b"hi"]) as server:
        route(emulator, server)
        for i in range(4):
            assert host.at(open_line(1, 0)) == b"\r\nOK\r\n"
            want = b'\r\n+QSSLOPEN: 1,0\r\n\r\n+QSSLURC: "recv",1\r\n'
            assert host.read_exactly(len(want), timeout=5) == want
            assert host.at("AT+QSSLRECV=1,100") == b"\r\n+QSSLRECV: 2\r\nhi\r\n\r\nOK\r\n"
            assert host.send_data(1, b"abc") == b"\r\nSEND OK\r\n"
            host.read_exactly(len(b'\r\n+QSSLURC: "recv",1\r\n'), timeout=5)
            assert host.at("AT+QSSLRECV=1,100") == b"\r\n+QSSLRECV: 3\r\nabc\r\n\r\nOK\r\n"
            assert host.at("AT+QSSLCLOSE=1") == b"\r\nOK\r\n"
        server.wait(lambda: len(server.handshakes) == 4)
        assert [h["reused"] for h in server.handshakes] == [False, True, True, True], server.handshakes


@pytest.mark.parametrize("mode", [1, 2])
def test_resumed_open_push_and_transparent(modem, emulator, mode):
    host, advance, port = modem
    with FlightServer(tail=[b"resumed-data"]) as server:
        route(emulator, server)
        for i in range(3):
            if mode == 2:
                host.write(open_line(2, 2) + "\r")
                want = b"\r\nCONNECT\r\nresumed-data"
                assert host.read_exactly(len(want), timeout=5) == want
                advance(1.1)
                host.write(b"+++")
                advance(1.1)
                assert host.read_until(b"\r\nOK\r\n", timeout=5) == b"\r\nOK\r\n"
            else:
                host.write(open_line(2, 1) + "\r")
                want = b'\r\nOK\r\n\r\n+QSSLOPEN: 2,0\r\n\r\n+QSSLURC: "recv",2,12\r\nresumed-data\r\n'
                assert host.read_exactly(len(want), timeout=5) == want
            assert host.at("AT+QSSLCLOSE=2") == b"\r\nOK\r\n"
        server.wait(lambda: len(server.handshakes) == 3)
        assert [h["reused"] for h in server.handshakes] == [False, True, True]


# -- the negotiate timer --------------------------------------------------------------------
def test_negotiatetime_expires_then_finished_arrives(modem, emulator):
    """negotiatetime runs out while the server holds its Finished: one failure answer;
    the Finished that arrives later changes nothing."""
    host, advance, port = modem
    assert host.at('AT+QSSLCFG="negotiatetime",1,10') == b"\r\nOK\r\n"
    hold = threading.Event()
    with FlightServer(tail=[b"too late"], hold_finished=hold) as server:
        route(emulator, server)
        assert host.at(open_line(0, 0)) == b"\r\nOK\r\n"
        time.sleep(0.2)                               # the client's Finished is out
        advance(10)
        out = host.read_until(re.compile(rb"\+QSSLOPEN: 0,-?\d+\r\n"), timeout=5)
        assert re.fullmatch(rb"\r\n\+QSSLOPEN: 0,(\d+)\r\n", out) and not out.endswith(b",0\r\n"), out
        hold.set()
        server.flight_sent.wait(5)
        assert host.quiet_for(0.2) == b""
        assert host.at("AT+QSSLSTATE=0") == b"\r\nOK\r\n"
        assert host.at("AT+QSSLCLOSE=0") == b"\r\nOK\r\n"


def test_finished_just_before_negotiatetime_then_timer_runs(modem, emulator):
    host, advance, port = modem
    assert host.at('AT+QSSLCFG="negotiatetime",1,10') == b"\r\nOK\r\n"
    hold = threading.Event()
    with FlightServer(tail=[b"in time"], hold_finished=hold) as server:
        route(emulator, server)
        assert host.at(open_line(0, 0)) == b"\r\nOK\r\n"
        time.sleep(0.1)
        advance(9.999)
        hold.set()
        want = b'\r\n+QSSLOPEN: 0,0\r\n\r\n+QSSLURC: "recv",0\r\n'
        assert host.read_exactly(len(want), timeout=5) == want
        advance(100)
        assert host.quiet_for(0.1) == b""
        assert host.at("AT+QSSLRECV=0,100") == b"\r\n+QSSLRECV: 7\r\nin time\r\n\r\nOK\r\n"
        assert host.at("AT+QSSLCLOSE=0") == b"\r\nOK\r\n"


# -- the host hangs up during the handshake --------------------------------------------------
@pytest.mark.parametrize("mode", [0, 1, 2])
def test_host_hangs_up_during_the_handshake(emulator, modem, mode):
    host, advance, port = modem
    hold = threading.Event()
    with FlightServer(tail=[b"for nobody"], hold_finished=hold) as server:
        route(emulator, server)
        host.write(open_line(3, mode) + "\r")
        if mode != 2:
            assert host.read_until(b"\r\nOK\r\n", timeout=5) == b"\r\nOK\r\n"
        time.sleep(0.1)
        host.close()
        time.sleep(0.05)
        hold.set()
        server.flight_sent.wait(5)
        time.sleep(0.1)
        again = Host(port.path)
        try:
            stale = again.quiet_for(0.2)
            # a push-mode socket may push its data when the new host is there: only URCs
            # of the socket, never a stray CONNECT / OK of the old host's command
            assert b"CONNECT" not in stale and b"OK" not in stale, stale
            assert again.at("AT").endswith(b"\r\nOK\r\n")
            assert again.at("AT+QSSLCLOSE=3").endswith(b"\r\nOK\r\n")
            assert again.at("AT+QSSLSTATE") .endswith(b"\r\nOK\r\n")
        finally:
            again.close()


# -- many opens at once -----------------------------------------------------------------------
def test_twelve_ids_open_at_once_each_answered_once(modem, emulator):
    host, advance, port = modem
    with FlightServer(tail=[b"D"]) as server:
        route(emulator, server)
        start = len(host.transcript)
        host.write("".join(open_line(i, i % 2) + "\r\n" for i in range(12)))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            host._fill()
            if all(b"+QSSLOPEN: %d,0\r\n" % i in host.transcript[start:] for i in range(12)) and \
                    host.transcript[start:].count(b"\r\nOK\r\n") >= 12:
                break
        t = bytes(host.transcript[start:])
        for i in range(12):
            assert t.count(b"+QSSLOPEN: %d," % i) == 1, t
            opened = t.index(b"+QSSLOPEN: %d,0\r\n" % i)
            # the id whole: '"recv",1' must not be found in '"recv",11,1' (buffer mode ends
            # the URC with CR LF, push mode goes on with ",<len>")
            urc = re.compile(rb'\+QSSLURC: "recv",%d(?:\r\n|,)' % i)
            found = urc.search(t)
            if found is None:
                host.seen(urc, 5)
                t = bytes(host.transcript[start:])
                found = urc.search(t)
            assert opened < found.start(), (i, t)
        assert t.count(b"\r\nOK\r\n") == 12
        host.pending.clear()
        for i in range(12):
            assert host.at(f"AT+QSSLCLOSE={i}").endswith(b"\r\nOK\r\n")


def test_two_modems_open_at_once(emulator, open_modem, caplog):
    import logging
    caplog.set_level(logging.INFO)
    hosts = []
    for _ in range(2):
        h, _ = open_modem("ec2x")
        assert h.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
        hosts.append(h)
    with FlightServer(tail=[b"both"]) as server:
        route(emulator, server)
        for _ in range(3):
            for h in hosts:
                h.write(open_line(0, 1) + "\r")
            for h in hosts:
                want = b'\r\nOK\r\n\r\n+QSSLOPEN: 0,0\r\n\r\n+QSSLURC: "recv",0,4\r\nboth\r\n'
                assert h.read_exactly(len(want), timeout=5) == want
            for h in hosts:
                assert h.at("AT+QSSLCLOSE=0") == b"\r\nOK\r\n"
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad]


# -- ML302 ------------------------------------------------------------------------------------
def test_ml302_buffer_data_with_finished(ml302_strict, emulator):
    host, advance, port = ml302_strict
    with FlightServer(tail=[b"ml302 data", "close_notify"], after="fin") as server:
        route(emulator, server)
        bytewise(host, f'AT+QSSLOPEN=1,0,"{TLS_HOST}",443,0')
        out = host.read_until(b'+QSSLURC: "close",1\r\n', timeout=5)
        assert out == (b'\r\nOK\r\n\r\n+QSSLOPEN: 1,0\r\n\r\n+QSSLURC: "recv",1,1\r\n'
                       b'\r\n+QSSLURC: "close",1\r\n'), out
        got = host.at("AT+QSSLRECV=1,1,1500")
        assert b"ml302 data" in got and got.endswith(b"OK\r\n"), got
        assert host.at("AT+QSSLCLOSE=1").endswith(b"OK\r\n")


def test_ml302_transparent_data_with_finished(ml302_strict, emulator):
    host, advance, port = ml302_strict
    with FlightServer(tail=[PAYLOAD]) as server:
        route(emulator, server)
        bytewise(host, f'AT+QSSLOPEN=2,0,"{TLS_HOST}",443,1')
        want = b"\r\nCONNECT\r\n" + PAYLOAD
        assert host.read_exactly(len(want), timeout=5) == want
        host.write(b"up")
        assert host.read_exactly(2, timeout=5) == b"up"
        advance(1.1)
        host.write(b"+++")
        advance(1.1)
        assert host.read_until(b"\r\nOK\r\n", timeout=5) == b"\r\nOK\r\n"
        assert host.at("AT+QSSLCLOSE=2").endswith(b"OK\r\n")


# -- AT+QIOPEN TCP: a server that speaks first --------------------------------------------------
class Greeter:
    def __init__(self, greeting: bytes, after: str = "hold") -> None:
        self.greeting, self.after = greeting, after
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.conns.append(conn)
            conn.sendall(self.greeting)
            if self.after == "fin":
                conn.shutdown(socket.SHUT_WR)
            elif self.after == "rst":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()

    def close(self):
        self.listener.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


# (No "rst" variant: a server that resets right after accept can beat the emulator's connect
# check -- SO_ERROR ECONNRESET -- and the open then fails 566, a kernel race, not the answer's.)
@pytest.mark.parametrize("after", ["hold", "fin"])
@pytest.mark.parametrize("mode", [0, 1, 2])
def test_qiopen_server_speaks_first(modem, emulator, mode, after):
    host, advance, port = modem
    server = Greeter(b"220 greeting\r\n", after)
    try:
        emulator.router.add_map("greet.example", 25, "127.0.0.1", server.port)
        bytewise(host, f'AT+QIOPEN=1,4,"TCP","greet.example",25,0,{mode}')
        g = b"220 greeting\r\n"
        if mode == 2:
            want = b"\r\nCONNECT\r\n" + g + (b"\r\nNO CARRIER\r\n" if after != "hold" else b"")
            assert host.read_exactly(len(want), timeout=5) == want
            if after == "hold":
                advance(1.1)
                host.write(b"+++")
                advance(1.1)
                assert host.read_until(b"\r\nOK\r\n", timeout=5) == b"\r\nOK\r\n"
        elif mode == 1:
            want = b'\r\nOK\r\n\r\n+QIOPEN: 4,0\r\n\r\n+QIURC: "recv",4,%d\r\n' % len(g) + g + b"\r\n"
            if after != "hold":
                want += b'\r\n+QIURC: "closed",4\r\n'
            assert host.read_exactly(len(want), timeout=5) == want
        else:
            want = b'\r\nOK\r\n\r\n+QIOPEN: 4,0\r\n\r\n+QIURC: "recv",4\r\n'
            if after != "hold":
                want += b'\r\n+QIURC: "closed",4\r\n'
            assert host.read_exactly(len(want), timeout=5) == want
            got = host.at("AT+QIRD=4,1500")
            assert got == b"\r\n+QIRD: %d\r\n" % len(g) + g + b"\r\n\r\nOK\r\n", got
        assert host.at("AT+QICLOSE=4,0").endswith(b"\r\nOK\r\n")
        assert host.quiet_for(0.1) == b""
    finally:
        server.close()


# -- renegotiation right after the open; DTLS ----------------------------------------------------
@pytest.mark.needs_native
def test_renegotiation_right_after_open(modem, emulator, pki):
    from emulator.testing.peers import OpenSslServer
    host, advance, port = modem
    cert, key = pki.server.load_args
    server = OpenSslServer(["-cert", cert, "-key", key, "-tls1_2"])
    try:
        route(emulator, server)
        assert host.at('AT+QSSLCFG="renegotiation",1,1') == b"\r\nOK\r\n"
        assert host.at(open_line(0, 1)) == b"\r\nOK\r\n"
        server.wait_for_output(rb"CIPHER is")
        want = b"\r\n+QSSLOPEN: 0,0\r\n"
        assert host.read_exactly(len(want), timeout=5) == want
        mark = server.mark()
        server.write(b"r\n")                      # HelloRequest right after the open
        assert host.send_data(0, b"during\n") == b"\r\nSEND OK\r\n"
        server.wait_for_output(rb"SSL_do_handshake -> 1", since=mark)
        server.write(b"after reneg\n")
        got = b""
        while b"after reneg\n" not in got:
            line = host.read_until(re.compile(rb'\r\n\+QSSLURC: "recv",0,(\d+)\r\n'), timeout=5)
            n = int(re.search(rb",(\d+)\r\n$", line).group(1))
            assert line == b'\r\n+QSSLURC: "recv",0,%d\r\n' % n, line
            got += host.read_exactly(n, timeout=5)
            assert host.read_exactly(2, timeout=5) == b"\r\n"     # the push's end
        assert got == b"after reneg\n"
        assert host.at("AT+QSSLCLOSE=0") == b"\r\nOK\r\n"
    finally:
        server.stop()


def test_dtls_open_then_server_data(modem, emulator, pki):
    from emulator.testing.peers import OpenSslServer
    host, advance, port = modem
    cert, key = pki.server.load_args
    server = OpenSslServer(["-cert", cert, "-key", key, "-dtls1_2", "-cipher", "ALL:@SECLEVEL=0"])
    try:
        route(emulator, server)
        assert host.at('AT+QSSLCFG="dtls",1,1') == b"\r\nOK\r\n"
        bytewise(host, open_line(0, 1))
        want = b"\r\nOK\r\n\r\n+QSSLOPEN: 0,0\r\n"
        assert host.read_exactly(len(want), timeout=10) == want
        server.wait_for_output(rb"CIPHER is")
        server.write(b"dgram\n")
        want = b'\r\n+QSSLURC: "recv",0,6\r\ndgram\n\r\n'
        assert host.read_exactly(len(want), timeout=5) == want
        assert host.at("AT+QSSLCLOSE=0,0") == b"\r\nOK\r\n"
        assert host.quiet_for(0.1) == b""
    finally:
        server.stop()


# -- a broken record or a fatal alert right behind the Finished ---------------------------------
BAD_RECORD = ("raw", b"\x17\x03\x03\x00\x28" + bytes(range(40)))       # bad MAC / tag
FATAL_ALERT = ("raw", b"\x15\x03\x03\x00\x02\x02\x50")               # not encrypted: garbage too


@pytest.mark.parametrize("junk", [BAD_RECORD, FATAL_ALERT], ids=["bad_record", "clear_alert"])
@pytest.mark.parametrize("mode", [0, 1, 2])
def test_finished_data_then_broken_record_in_one_segment(modem, emulator, junk, mode):
    """The handshake ends and the connection fails in the same network callback: the open
    succeeded (one "+QSSLOPEN: <id>,0" / CONNECT), the data before the broken record are
    delivered, then the close is reported ("closed" URC / NO CARRIER); never a second answer."""
    host, advance, port = modem
    with FlightServer(tail=[b"good", junk], after="hold") as server:
        route(emulator, server)
        bytewise(host, open_line(1, mode))
        if mode == 2:
            want = b"\r\nCONNECT\r\ngood\r\nNO CARRIER\r\n"
            assert host.read_until(b"NO CARRIER\r\n", timeout=5) == want
        elif mode == 1:
            out = host.read_until(b'+QSSLURC: "closed",1\r\n', timeout=5)
            assert out == (b'\r\nOK\r\n\r\n+QSSLOPEN: 1,0\r\n\r\n+QSSLURC: "recv",1,4\r\ngood\r\n'
                           b'\r\n+QSSLURC: "closed",1\r\n'), out
        else:
            out = host.read_until(b'+QSSLURC: "closed",1\r\n', timeout=5)
            assert out == (b'\r\nOK\r\n\r\n+QSSLOPEN: 1,0\r\n\r\n+QSSLURC: "recv",1\r\n'
                           b'\r\n+QSSLURC: "closed",1\r\n'), out
            assert host.at("AT+QSSLRECV=1,100") == b"\r\n+QSSLRECV: 4\r\ngood\r\n\r\nOK\r\n"
        assert host.at("AT+QSSLSEND=1,1").endswith(b"ERROR\r\n")
        assert host.at("AT+QSSLCLOSE=1,0") == b"\r\nOK\r\n"
        assert host.quiet_for(0.1) == b""


# -- the answer while the port is busy; big data with the Finished; the id reused ------------------
@pytest.mark.parametrize("mode", [0, 1])
def test_answer_while_the_host_is_in_a_data_prompt(modem, emulator, mode):
    """The handshake of id 0 ends while the host is at another socket's "> " prompt: the
    answer (and push data) wait for SEND OK, then come in order: answer first."""
    host, advance, port = modem
    hold = threading.Event()
    with FlightServer(tail=[b"held-data"], hold_finished=hold) as held, \
            FlightServer(tail=[], after="hold") as other:
        route(emulator, held)
        route(emulator, other, "other.example")
        assert host.at(open_line(1, 0, "other.example")) == b"\r\nOK\r\n"
        assert host.read_exactly(len(b"\r\n+QSSLOPEN: 1,0\r\n"), timeout=5) == b"\r\n+QSSLOPEN: 1,0\r\n"
        assert host.at(open_line(0, mode)) == b"\r\nOK\r\n"
        assert held.finished_in.wait(5)
        host.write("AT+QSSLSEND=1,5\r")
        assert host.read_until(b"> ", timeout=5) == b"\r\n> "
        hold.set()
        held.flight_sent.wait(5)
        time.sleep(0.1)                       # the flight is read while the prompt is out
        assert host.quiet_for(0.05) == b""
        host.write(b"12345")
        tail = (b'\r\n+QSSLURC: "recv",0,9\r\nheld-data\r\n' if mode == 1 else b'\r\n+QSSLURC: "recv",0\r\n')
        want = b"\r\nSEND OK\r\n\r\n+QSSLOPEN: 0,0\r\n" + tail
        assert host.read_exactly(len(want), timeout=5) == want
        for i in (0, 1):
            assert host.at(f"AT+QSSLCLOSE={i},0") == b"\r\nOK\r\n"


@pytest.mark.parametrize("mode", [0, 1, 2])
def test_big_data_with_the_finished_all_delivered_in_order(modem, emulator, mode):
    host, advance, port = modem
    blob = bytes((i * 7 + i // 256) & 0xFF for i in range(150_000))
    with FlightServer(tail=[blob], after="hold") as server:
        route(emulator, server)
        bytewise(host, open_line(3, mode))
        got = b""
        if mode == 2:
            assert host.read_exactly(len(b"\r\nCONNECT\r\n"), timeout=5) == b"\r\nCONNECT\r\n"
            got = host.read_exactly(len(blob), timeout=10)
            advance(1.1)
            host.write(b"+++")
            advance(1.1)
            assert host.read_until(b"\r\nOK\r\n", timeout=5) == b"\r\nOK\r\n"
        elif mode == 1:
            head = b"\r\nOK\r\n\r\n+QSSLOPEN: 3,0\r\n"
            assert host.read_exactly(len(head), timeout=5) == head
            got = read_pushed(host, 3, len(blob))
        else:
            head = b'\r\nOK\r\n\r\n+QSSLOPEN: 3,0\r\n\r\n+QSSLURC: "recv",3\r\n'
            assert host.read_exactly(len(head), timeout=5) == head
            while len(got) < len(blob):
                answer = host.at("AT+QSSLRECV=3,1500")
                m = re.match(rb"\r\n\+QSSLRECV: (\d+)\r\n", answer)
                assert m, answer
                n = int(m.group(1))
                got += answer[m.end():m.end() + n]
                if n == 0:
                    host.seen(b'+QSSLURC: "recv",3\r\n', 5)
        assert got == blob
        assert host.at("AT+QSSLCLOSE=3,0") == b"\r\nOK\r\n"


def test_id_reused_while_the_old_open_finished_is_in_flight(modem, emulator):
    """Open id 8 (its server holds the Finished), close it, open id 8 elsewhere: when the
    old server's Finished arrives, only the new open's answer is ever seen."""
    host, advance, port = modem
    hold = threading.Event()
    with FlightServer(tail=[b"old"], hold_finished=hold) as old, \
            FlightServer(tail=[b"new"], after="hold") as new:
        route(emulator, old)
        route(emulator, new, "new.example")
        assert host.at(open_line(8, 1)) == b"\r\nOK\r\n"
        assert old.finished_in.wait(5)
        host.write(f"AT+QSSLCLOSE=8,0\r{open_line(8, 1, 'new.example')}\r")
        want = b'\r\nOK\r\n\r\nOK\r\n\r\n+QSSLOPEN: 8,0\r\n\r\n+QSSLURC: "recv",8,3\r\nnew\r\n'
        assert host.read_exactly(len(want), timeout=5) == want
        hold.set()
        old.flight_sent.wait(5)
        assert host.quiet_for(0.2) == b""
        assert host.at("AT+QSSLCLOSE=8,0") == b"\r\nOK\r\n"
