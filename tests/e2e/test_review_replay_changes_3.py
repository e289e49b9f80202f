"""Review of commit 0a56aaa (emulator/tools/trace.py): in `replay`, a TCP connect (AT+QIOPEN
"TCP", AT+QSSLOPEN over TLS) that the recording's server refused, or whose name lookup
failed, is accepted by its destination's stand-in server, whose JSON header line
{"fail": "connect"|"dns"} comes at the recorded moment (ReplayPlainSession / ReplaySession turn
it into 566 / 565), and a --scenario fault that failed such an open is left to the stand-in
(_ReplayFaults.stood_in).

Sessions are recorded through the pty (open_modem(..., trace=...), manual time and the control
API's net latency / connect_refuse / dns_fail where the moment matters) against loopback peers
(a bound socket that refuses until it listens, TcpServer, TlsServer); each is then replayed
(`replay_main([path]) == 0`, "no difference"), and a changed trace must be named (exit 1).

Replayed with no difference:
* refused and successful opens to ONE destination, interleaved: refused first then connected,
  connected first then refused, on different socket ids, concurrently (the later open
  completing first), a dns_fail-failed open between two good ones;
* refused AT+QSSLOPEN in each EC2x access mode (buffer, push, transparent), polled with
  AT+QSSLSTATE over a slow network, then a retry that connects (the ML302's: see the bugs);
* AT+QIDNSGIP and AT+QPING of a name whose open's lookup failed (dns_fail);
* a refused connect the host closed (AT+QICLOSE) before the refusal came, then a new socket to
  the same destination; a refused connect under way at AT+QIDEACT and at AT+CFUN=1,1;
* traces recorded under a --scenario with connect_refuse / dns_fail and net latency, replayed
  with it;
* AT+QGDCNT? after a refused / unresolved AT+QIOPEN (the stand-in's header line not counted);
* a refusal that comes while the host sits at a "> " prompt, while nobody holds the port, in
  transparent mode (ERROR, AT+QIGETERROR), a refusal 12 s late (with and without --max-gap);
* AT+QIDNSGIP and AT+QPING of a refused open's name.
Named as a difference: a refused open's open_result made a dns failure, or removed.

Bugs found (strict xfails then; the comments above them give the causes).  All but the last
were fixed by replacing 0a56aaa's stand-in refusal: a refused or unresolved open now waits in
the replay for the moment its recorded answer came and then fails as it did -- no connection
to any stand-in (_ReplayFaults.failure_wait); refusals count as ended connects in the moments;
a refused open's "shown" address is recorded.  The last was fixed later: the trace records
an SSL socket's TCP connect ("connected") and the replay's is complete at that moment
(_ReplayFaults.connect_wait), so negotiatetime runs from there as it did:
* AT+QPING of a name whose AT+QIOPEN lookup failed because nothing knew it pings in the replay
  (the stand-in's route makes the name known) -- the recording said +QPING: 565;
* AT+QGDCNT? after a refused AT+QSSLOPEN counts the stand-in's header line (91 bytes received);
* ML302: AT+QSSLSTATE after (and while) a refused AT+QSSLOPEN shows an address, the recording "";
* a refusal and a connect that complete at one moment (the host at a prompt) replay their
  +QIOPEN URCs out of order (a stood-in refusal is not counted as a connect that ended);
* AT+QIOPEN of host "." / "[]" (565): the replay dies with ValueError (a route with no name);
* a TCP open whose lookup failed beside a UDP socket to the same name and port replays as
  refused (566): the UDP stand-in's route wins;
* a refused connect on the real network polled while opening shows a made-up address in the
  (offline) replay: the real DNS's answer for a refused open is not in the trace;
* a refused AT+QSSLOPEN slower than negotiatetime, polled, times out (569) in the replay: the
  handshake timer starts at the stand-in's instant connect (the same for a successful open
  whose connect plus handshake passed negotiatetime -- not new in 0a56aaa).
"""
from __future__ import annotations

import re
import socket
import threading
import time

import pytest

from emulator.io.app import BackgroundEmulator
from emulator.testing.host import Host

from emulator.testing.peers import TcpServer, TlsServer, UdpEchoServer
from emulator.tools.trace import TraceWriter
from tests.e2e import replay_support as rs
from tests.e2e.replay_support import (  # (helpers the review rounds share)
    echo_close as _echo_close, tcp_open as _tcp_open, echo_on as _echo_on, finish as _finish)

OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"
HOST = "www.iottest.work"           # a name the shared PKI's server certificate carries
ATTACH = 'AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1'
QISTATE = re.compile(rb'\r\n\+QISTATE: (\d+),"TCP","[\d.]+",\d+,\d+,(\d),1,\d+,\d,"usbmodem"\r\n\r\nOK\r\n')


# -- helpers -------------------------------------------------------------------------------------
class _Refusing:
    """A bound socket that refuses connects (not listening) until listen(); then it echoes
    each connection until the modem closes."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def listen(self) -> None:
        self.sock.listen(8)

        def serve() -> None:
            while True:
                try:
                    conn, _ = self.sock.accept()
                except OSError:
                    return
                threading.Thread(target=self._echo, args=(conn,), daemon=True).start()
        threading.Thread(target=serve, daemon=True).start()

    @staticmethod
    def _echo(conn) -> None:
        with conn:
            try:
                while data := conn.recv(100):
                    conn.sendall(data)
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


def _modem(open_modem, emulator, path, profile: str = "ec2x", manual: bool = True):
    host, port = open_modem(profile, trace=str(path), manual_time=manual)
    host.line_end = b"\r\n"                       # most drivers end their lines with CR LF
    advance = emulator.advancer(port, host) if manual else None
    return host, advance, port


def _slow(emulator, ms: int) -> None:
    assert emulator.control("net", latency_ms=ms)["ok"]


def _state(host, cid: int) -> int:
    answer = host.at(f"AT+QISTATE=1,{cid}")
    m = QISTATE.fullmatch(answer)
    assert m and int(m.group(1)) == cid, answer
    return int(m.group(2))


def _advance_until(host, advance, pattern, step: float = 0.5, tries: int = 60) -> bytes:
    for _ in range(tries):
        advance(step)
        try:
            return host.read_until(pattern, timeout=0.3)
        except AssertionError:
            continue
    return host.read_until(pattern)


# -- a failed lookup's name, asked again ---------------------------------------------------------
# BUG: scripts_of (emulator/tools/trace.py:730-736) now gives an AT+QIOPEN "TCP" whose lookup
# failed a stand-in ({"fail": "dns"}), and replay_records routes its name:port to it
# (trace.py:1574-1575, emu.router.add_map).  A name that failed because nothing knew it (an offline
# emulator, a name the network does not have) is then known to the replay's router
# (Router.knows: "a route on any port"), so AT+QPING (and AT+QNTP) of that name -- which failed
# with 565 in the recording -- now resolves (NetUtil.lookup, emulator/commands/netutil.py:178)
# and pings: "+QPING: 0,..." where the recording has "+QPING: 565".  Before 0a56aaa the name
# was left unrouted and failed the same way again.  (AT+QIDNSGIP is failed again by
# _lookups_failed; AT+QPING's and AT+QNTP's lookups are not.)
# Was a bug, fixed (a refused or unresolved open waits in the replay for its recorded moment, then
# fails as recorded -- no stand-in connection: _ReplayFaults.failure_wait; refusals count as ended
# connects in the moments): AT+QPING of a name whose AT+QIOPEN lookup failed (565) pings in the
# replay: the stand-in's route makes the name known
def test_a_ping_of_a_name_whose_open_did_not_resolve_replays(open_modem, emulator, tmp_path, capsys):
    """An offline modem: AT+QIOPEN of a name nobody knows (565), then AT+QPING and
    AT+QIDNSGIP of it (565 both)."""
    path = tmp_path / "unrouted_ping.trace"
    host, _, _ = _modem(open_modem, emulator, path, manual=False)
    assert host.at(ATTACH) == OK
    _tcp_open(host, 0, 1, name="nowhere.example")
    assert host.read_until(b"+QIOPEN: 0,565\r\n") == b"\r\n+QIOPEN: 0,565\r\n"
    assert host.at('AT+QIDNSGIP=1,"nowhere.example"') == OK
    assert host.read_until(b'"dnsgip",565\r\n') == b'\r\n+QIURC: "dnsgip",565\r\n'
    assert host.at('AT+QPING=1,"nowhere.example",1,1') == OK
    assert host.read_until(b"+QPING: 565\r\n") == b"\r\n+QPING: 565\r\n"
    _finish(emulator)
    rs.replays(capsys, path)


def test_a_dns_fail_open_then_lookups_and_pings_of_its_name_replay(open_modem, emulator, tmp_path, capsys):
    """dns_fail count 2 (the control API): AT+QIOPEN fails (565), AT+QIDNSGIP of its name
    fails too (the second fault), a second AT+QIDNSGIP answers, AT+QPING answers, and a
    retry of the open connects and echoes."""
    path = tmp_path / "dns_fail_lookups.trace"
    with TcpServer(behave=_echo_close) as server:
        emulator.router.add_map("tcp.example", 7000, "127.0.0.1", server.port)
        emulator.router.add_dns("tcp.example", "106.12.79.254")
        host, _, _ = _modem(open_modem, emulator, path, manual=False)
        assert host.at(ATTACH) == OK
        assert emulator.control("dns_fail", count=2)["ok"]
        _tcp_open(host, 0, 1)
        assert host.read_until(b"+QIOPEN: 0,565\r\n") == b"\r\n+QIOPEN: 0,565\r\n"
        assert host.at('AT+QIDNSGIP=1,"tcp.example"') == OK
        assert host.read_until(b'"dnsgip",565\r\n') == b'\r\n+QIURC: "dnsgip",565\r\n'
        assert host.at('AT+QIDNSGIP=1,"tcp.example"') == OK
        assert host.read_until(b'"106.12.79.254"\r\n').endswith(b'\r\n+QIURC: "dnsgip","106.12.79.254"\r\n')
        assert host.at('AT+QPING=1,"tcp.example",1,1') == OK
        assert host.read_until(re.compile(rb"\+QPING: 0,1,1,0,\d+,\d+,\d+\r\n")).startswith(
            b'\r\n+QPING: 0,"106.12.79.254",32,')
        _tcp_open(host, 0, 1)
        assert host.read_until(b"+QIOPEN: 0,0\r\n") == b"\r\n+QIOPEN: 0,0\r\n"
        _echo_on(host, 0, b"named")
        assert host.at("AT+QICLOSE=0") == OK
        _finish(emulator)
    rs.replays(capsys, path)


# -- refused and connected opens to one destination ----------------------------------------------
def test_refused_then_connected_opens_on_other_ids_concurrently_replay(open_modem, emulator, tmp_path, capsys):
    """Socket 0's connect (1 s round trip) is refused; the server starts listening while it is
    under way; socket 1 (0.2 s) and socket 2 (0.4 s) to the same destination connect before
    the refusal comes; AT+QISTATE polls meanwhile; both echo."""
    path = tmp_path / "interleaved.trace"
    server = _Refusing()
    try:
        emulator.router.add_map("tcp.example", 7000, "127.0.0.1", server.port)
        host, advance, _ = _modem(open_modem, emulator, path)
        assert host.at(ATTACH) == OK
        _slow(emulator, 500)
        _tcp_open(host, 0, 1)
        assert _state(host, 0) == 1
        advance(0.05)                              # (the real connect: refused at once)
        server.listen()
        _slow(emulator, 100)
        _tcp_open(host, 1, 1)
        _slow(emulator, 200)
        _tcp_open(host, 2, 0)
        assert _state(host, 0) == 1
        assert _advance_until(host, advance, b"+QIOPEN: 2,0\r\n", step=0.25) == \
            b"\r\n+QIOPEN: 1,0\r\n\r\n+QIOPEN: 2,0\r\n"
        assert _state(host, 0) == 1
        assert _advance_until(host, advance, b"+QIOPEN: 0,566\r\n", step=0.25) == b"\r\n+QIOPEN: 0,566\r\n"
        _slow(emulator, 0)
        assert host.at("AT+QISTATE=1,0") == OK
        _echo_on(host, 1, b"one")
        rs.qisend(host, 2, b"two")
        assert host.read_until(b'"recv",2\r\n') == b'\r\n+QIURC: "recv",2\r\n'
        assert host.at("AT+QIRD=2,100") == b"\r\n+QIRD: 3\r\ntwo\r\n\r\nOK\r\n"
        assert host.at("AT+QICLOSE=1;+QICLOSE=2") == OK
        _finish(emulator)
    finally:
        server.close()
    rs.replays(capsys, path)


def test_connected_then_refused_then_connected_to_one_destination_replay(open_modem, emulator, tmp_path, capsys):
    """connect_refuse (the control API) between two good opens to one destination: socket 3
    connects, socket 0's open is refused (slow: polled while opening), socket 3 is closed and
    a new socket 3 connects; a dns_fail open on id 5 between them (565)."""
    path = tmp_path / "good_refused_good.trace"
    with TcpServer(behave=_echo_close) as server:
        emulator.router.add_map("tcp.example", 7000, "127.0.0.1", server.port)
        host, advance, _ = _modem(open_modem, emulator, path)
        assert host.at(ATTACH) == OK
        _tcp_open(host, 3, 1)
        assert host.read_until(b"+QIOPEN: 3,0\r\n") == b"\r\n+QIOPEN: 3,0\r\n"
        _slow(emulator, 300)
        assert emulator.control("connect_refuse", count=1)["ok"]
        _tcp_open(host, 0, 1)
        assert _state(host, 0) == 1
        assert emulator.control("dns_fail", count=1)["ok"]
        _tcp_open(host, 5, 0)
        assert _advance_until(host, advance, b"+QIOPEN: 5,565\r\n") == b"\r\n+QIOPEN: 0,566\r\n\r\n+QIOPEN: 5,565\r\n"
        _slow(emulator, 0)
        _echo_on(host, 3, b"first")
        assert host.at("AT+QICLOSE=3") == OK
        _tcp_open(host, 3, 1)
        assert host.read_until(b"+QIOPEN: 3,0\r\n") == b"\r\n+QIOPEN: 3,0\r\n"
        _echo_on(host, 3, b"second")
        assert host.at("AT+QICLOSE=3") == OK
        _finish(emulator)
    rs.replays(capsys, path)
    changed = rs.changed(tmp_path, path, lambda r: r["kind"] == "open_result" and r.get("code") == 566,
                         lambda r: {**r, "code": 565, "failure": "dns"})
    code, out = rs.replay(capsys, changed)
    assert code == 1 and "+QIOPEN: 0,565" in out.split("got:")[1], out


# -- AT+QGDCNT ----------------------------------------------------------------------------------
def test_qgdcnt_after_refused_and_unresolved_tcp_opens_replays(open_modem, emulator, tmp_path, capsys):
    """A refused AT+QIOPEN (slow), an unresolved one (dns_fail), AT+QGDCNT? (0,0), then an
    echo and AT+QGDCNT? (5,5): no stand-in header counted."""
    path = tmp_path / "qgdcnt_refused.trace"
    server = _Refusing()
    try:
        emulator.router.add_map("tcp.example", 7000, "127.0.0.1", server.port)
        host, advance, _ = _modem(open_modem, emulator, path)
        assert host.at(ATTACH) == OK
        _slow(emulator, 200)
        _tcp_open(host, 0, 1)
        assert _advance_until(host, advance, b"+QIOPEN: 0,566\r\n") == b"\r\n+QIOPEN: 0,566\r\n"
        assert emulator.control("dns_fail", count=1)["ok"]
        _tcp_open(host, 1, 0)
        assert _advance_until(host, advance, b"+QIOPEN: 1,565\r\n") == b"\r\n+QIOPEN: 1,565\r\n"
        assert host.at("AT+QGDCNT?") == b"\r\n+QGDCNT: 0,0\r\n\r\nOK\r\n"
        server.listen()
        _slow(emulator, 0)
        _tcp_open(host, 2, 1)
        assert host.read_until(b"+QIOPEN: 2,0\r\n") == b"\r\n+QIOPEN: 2,0\r\n"
        _echo_on(host, 2, b"hello")
        assert host.at("AT+QGDCNT?") == b"\r\n+QGDCNT: 5,5\r\n\r\nOK\r\n"
        assert host.at("AT+QICLOSE=2") == OK
        _finish(emulator)
    finally:
        server.close()
    rs.replays(capsys, path)


# BUG: a refused AT+QSSLOPEN's stand-in now accepts the replay's connect and sends its header
# line ({"fail": "connect", "reason": ...}\n, ReplayPeer._serve, emulator/tools/trace.py:1104).
# SslSocket._from_network counts every byte the socket receives for AT+QGDCNT
# (emulator/sockets/ssl_socket.py:593); ReplayPlainSession takes its header back out of the
# counter (trace.py:911), ReplaySession (the SSL stand-in session) does not.  The recording's
# refused open received nothing (+QGDCNT: 0,0); the replay's AT+QGDCNT? shows the header's
# bytes received.  (README's "an SSL socket's count differs: TLS is not redone" cannot cover
# it: a refused open has no TLS; before 0a56aaa it was refused at once and counted nothing.)
# Was a bug, fixed (a refused or unresolved open waits in the replay for its recorded moment, then
# fails as recorded -- no stand-in connection: _ReplayFaults.failure_wait; refusals count as ended
# connects in the moments): AT+QGDCNT? after a refused AT+QSSLOPEN counts the stand-in's header
# line in the replay
def test_qgdcnt_after_a_refused_ssl_open_replays(open_modem, emulator, tmp_path, capsys):
    """AT+QSSLOPEN refused: +QSSLOPEN: 1,566, AT+QGDCNT? says 0,0."""
    path = tmp_path / "qgdcnt_ssl_refused.trace"
    server = _Refusing()
    try:
        emulator.router.add_map(HOST, 443, "127.0.0.1", server.port)
        host, _, _ = _modem(open_modem, emulator, path, manual=False)
        assert host.at(ATTACH) == OK
        assert host.at(f'AT+QSSLOPEN=1,1,1,"{HOST}",443,0') == OK
        assert host.read_until(b"+QSSLOPEN: 1,566\r\n") == b"\r\n+QSSLOPEN: 1,566\r\n"
        assert host.at("AT+QGDCNT?") == b"\r\n+QGDCNT: 0,0\r\n\r\nOK\r\n"
        _finish(emulator)
    finally:
        server.close()
    rs.replays(capsys, path)


# -- refused SSL opens ---------------------------------------------------------------------------
@pytest.mark.parametrize("mode", [0, 1, 2])
def test_a_refused_ssl_open_in_each_access_mode_then_a_retry_replays(open_modem, emulator, pki, tmp_path, capsys, mode):
    """AT+QSSLOPEN over a slow network to a destination that refuses (polled with
    AT+QSSLSTATE while opening), then the same destination answers (a TLS echo server moved
    behind it) and a retry on the same id connects; data both ways in the access mode."""
    path = tmp_path / f"ssl_refused_{mode}.trace"
    refusing = _Refusing()
    with TlsServer(pki.server, mode="echo") as tls:
        try:
            emulator.router.add_map(HOST, 443, "127.0.0.1", refusing.port)
            host, advance, _ = _modem(open_modem, emulator, path)
            assert host.at(ATTACH) == OK
            assert host.at('AT+QSSLCFG="seclevel",1,0') == OK
            _slow(emulator, 300)
            answer = b"\r\nERROR\r\n" if mode == 2 else b"\r\n+QSSLOPEN: 1,566\r\n"
            host.write(f'AT+QSSLOPEN=1,1,1,"{HOST}",443,{mode}\r\n')
            if mode != 2:
                assert host.read_until(b"OK\r\n") == OK
                assert re.fullmatch(rb'\r\n\+QSSLSTATE: 1,"SSLClient","[^"]+",443,\d+,1,1,\d+,%d,"usbmodem",1\r\n'
                                    rb'\r\nOK\r\n' % mode, host.at("AT+QSSLSTATE=1"))
            got = _advance_until(host, advance, answer.strip(b"\r\n") + b"\r\n")
            assert got == answer, got
            assert host.at("AT+QSSLSTATE=1") == OK
            _slow(emulator, 0)
            emulator.router.add_map(HOST, 443, "127.0.0.1", tls.port)
            if mode == 2:
                assert host.at(f'AT+QSSLOPEN=1,1,1,"{HOST}",443,2') == b"\r\nCONNECT\r\n"
                host.write(b"online")
                assert host.read_exactly(6) == b"online"
                advance(1.5)
                host.write(b"+++")
                advance(1.5)
                assert host.read_until(b"OK\r\n") == OK
            else:
                assert host.at(f'AT+QSSLOPEN=1,1,1,"{HOST}",443,{mode}') == OK
                assert host.read_until(b"+QSSLOPEN: 1,0\r\n") == b"\r\n+QSSLOPEN: 1,0\r\n"
                assert host.send_data(1, b"tls") == b"\r\nSEND OK\r\n"
                if mode == 1:
                    assert host.read_until(b"tls\r\n") == b'\r\n+QSSLURC: "recv",1,3\r\ntls\r\n'
                else:
                    assert host.read_until(b'"recv",1\r\n') == b'\r\n+QSSLURC: "recv",1\r\n'
                    assert host.at("AT+QSSLRECV=1,100") == b"\r\n+QSSLRECV: 3\r\ntls\r\n\r\nOK\r\n"
            assert host.at("AT+QSSLCLOSE=1") == OK
            _finish(emulator)
        finally:
            refusing.close()
    rs.replays(capsys, path)


def _ml302_states(ssid: int, state: str, address: str = "", port: int = 443, head: str = "IP PROCESSING") -> bytes:
    """The ML302's AT+QSSLSTATE answer with socket `ssid` in `state` (the others unused)."""
    lines = [f'+QSSLSTATE: "{head}"'] + [
        f'+QSSLSTATE: {i},"TCP","{address}",{port},"{state}",1' if i == ssid else f'+QSSLSTATE: {i},"TCP","",0,"INITIAL",1'
        for i in range(6)]
    return ("\r\n" + "\r\n".join(lines) + "\r\n\r\nOK\r\n").encode()


def _ml302_refused_then_retried(open_modem, emulator, pki, path, slow_ms: int) -> None:
    refusing = _Refusing()
    with TlsServer(pki.server, mode="echo") as tls:
        try:
            emulator.router.add_map(HOST, 443, "127.0.0.1", refusing.port)
            emulator.router.add_dns(HOST, "106.12.79.254")
            host, advance, _ = _modem(open_modem, emulator, path, profile="ml302")
            assert host.at('AT+CGDCONT=1,"IP","CMNET"') == OK
            assert host.at("AT+CGACT=1,1").endswith(OK)
            assert host.at('AT+QSSLCFG="seclevel",0,0') == OK
            if slow_ms:
                _slow(emulator, slow_ms)
            assert host.at(f'AT+QSSLOPEN=2,0,"{HOST}",443,0') == OK
            if slow_ms:                           # TCP not connected yet: no address
                assert host.at("AT+QSSLSTATE") == _ml302_states(2, "CONNECTING")
            assert _advance_until(host, advance, b"+QSSLOPEN: 2,") == b"\r\n+QSSLOPEN: 2,"
            assert host.read_until(b"\r\n") == b"-1\r\n"
            # a failed open: CLOSED, with the last address -- it never had one (never connected)
            assert host.at("AT+QSSLSTATE") == _ml302_states(2, "CLOSED", head="IP STATUS")
            _slow(emulator, 0)
            emulator.router.add_map(HOST, 443, "127.0.0.1", tls.port)
            assert host.at(f'AT+QSSLOPEN=2,0,"{HOST}",443,0') == OK
            assert host.read_until(b"+QSSLOPEN: 2,0\r\n") == b"\r\n+QSSLOPEN: 2,0\r\n"
            assert host.at("AT+QSSLSTATE") == _ml302_states(2, "CONNECTED", "106.12.79.254")
            host.write("AT+QSSLSEND=2\r\n")
            assert host.read_until(b"> ") == b"\r\n> "
            for byte in b"ping\x1a":                  # one byte at a time
                host.write(bytes([byte]))
            assert host.read_until(b"SEND OK\r\n").endswith(b"SEND OK\r\n")
            assert host.read_until(b'"recv",1,2\r\n').endswith(b'+QSSLURC: "recv",1,2\r\n')
            assert host.at("AT+QSSLRECV=1,2,1460") == b"\r\n+QSSLRECV: 106.12.79.254:443,TCP,4\r\nping\r\n\r\nOK\r\n"
            host.write("AT+QSSLCLOSE=2\r\n")
            assert host.read_until(b"CLOSE OK\r\n") == b"\r\nOK\r\n\r\n2,CLOSE OK\r\n"
            _finish(emulator)
        finally:
            refusing.close()


# BUG: a refused ML302 AT+QSSLOPEN now connects (at once, on loopback) to its stand-in in the
# replay, which says "refused" afterwards; the socket then has a remote address (SslSocket.remote,
# set by the connect: ssl_socket.py _dial), and the ML302's AT+QSSLSTATE prints one for a
# socket that has one (emulator/commands/ssl_ml302.py:211 _address: display_address(host) "if
# sock.remote").  The recording's refused socket never connected: `"CLOSED"` with `""` after
# the refusal (and `"CONNECTING"` with `""` over a slow network); the replay shows
# "106.12.79.254" in both.  Before 0a56aaa the replay's connect was refused too (a closed port).
# Was a bug, fixed (a refused or unresolved open waits in the replay for its recorded moment, then
# fails as recorded -- no stand-in connection: _ReplayFaults.failure_wait; refusals count as ended
# connects in the moments): ML302 AT+QSSLSTATE after a refused AT+QSSLOPEN shows the stand-in-
# connected address (CLOSED,"106.12.79.254") in the replay; the recording has ""
def test_a_refused_ml302_ssl_open_then_its_state_replays(open_modem, emulator, pki, tmp_path, capsys):
    """ML302: AT+QSSLOPEN refused (+QSSLOPEN: 2,-1); AT+QSSLSTATE: 2 CLOSED, no address;
    a retry to the same destination connects, echoes, closes."""
    path = tmp_path / "ml302_refused.trace"
    _ml302_refused_then_retried(open_modem, emulator, pki, path, slow_ms=0)
    rs.replays(capsys, path)


# Was a bug, fixed (a refused or unresolved open waits in the replay for its recorded moment, then
# fails as recorded -- no stand-in connection: _ReplayFaults.failure_wait; refusals count as ended
# connects in the moments): ML302 AT+QSSLSTATE while a refused AT+QSSLOPEN is under way shows an
# address (CONNECTING,"106.12.79.254") in the replay; the recording has ""
def test_a_refused_ml302_ssl_open_polled_over_a_slow_network_replays(open_modem, emulator, pki, tmp_path, capsys):
    """The same over a 600 ms round trip, AT+QSSLSTATE polled while it is opening."""
    path = tmp_path / "ml302_refused_slow.trace"
    _ml302_refused_then_retried(open_modem, emulator, pki, path, slow_ms=300)
    rs.replays(capsys, path)


# -- refusals and connects at one moment (the host at a prompt) ----------------------------------
# BUG: connects that complete while the host sits at a "> " prompt have their +QIOPEN URCs held
# until SEND OK, in the order they completed, all at the same byte counts; a stand-in's moment
# orders them by the connects and handshakes ended before it (scripts_of's `handshakes`,
# emulator/tools/trace.py:673-675, and the replay's tracer's `handshakes`, trace.py:264-265) --
# which count "handshake" records only.  A refusal (or failed lookup) that 0a56aaa now has its
# stand-in say at the open_result's moment is not counted as a connect that ended: a later
# connect's moment does not wait for it, so its "connected" header races the refusal's and the
# URCs come out of order ("+QIOPEN: 6,0" before "+QIOPEN: 7,566" where 7 was refused first).
# Fix: count a stood-in failure's open_result as a connect ended, in both counts.
# Was a bug, fixed (a refused or unresolved open waits in the replay for its recorded moment, then
# fails as recorded -- no stand-in connection: _ReplayFaults.failure_wait; refusals count as ended
# connects in the moments): a refusal and a connect that completed at one moment (host at a
# prompt) replay their +QIOPEN URCs out of order: a refusal is not counted as a connect ended
def test_refusals_and_connects_completing_while_the_host_is_at_a_prompt_replay_in_order(
        open_modem, emulator, tmp_path, capsys):
    """Sockets 1-8 opened with round trips of 3.2 s down to 0.4 s (8 completes first); the odd
    ones to a destination that refuses, the even ones to an echo server; socket 0 connected at
    once; the host at socket 0's prompt while 4 s pass: after SEND OK, +QIOPEN 8,0; 7,566;
    6,0; ... 1,566, then the echo."""
    path = tmp_path / "prompt_mixed.trace"
    refusing = _Refusing()
    with TcpServer(behave=_echo_close) as server:
        try:
            host, advance, _ = _modem(open_modem, emulator, path)
            assert host.at(ATTACH) == OK
            for cid in range(1, 9):
                emulator.router.add_map(f"tcp{cid}.example", 7000 + cid, "127.0.0.1",
                                        refusing.port if cid % 2 else server.port)
                _slow(emulator, 1800 - 200 * cid)
                _tcp_open(host, cid, 0, name=f"tcp{cid}.example", port=7000 + cid)
            emulator.router.add_map("tcp.example", 7000, "127.0.0.1", server.port)
            _slow(emulator, 0)
            _tcp_open(host, 0, 1)
            assert host.read_until(b"+QIOPEN: 0,0\r\n") == b"\r\n+QIOPEN: 0,0\r\n"
            host.write("AT+QISEND=0,5\r\n")
            assert host.read_until(b"> ") == b"\r\n> "
            advance(4.0)
            host.write(b"hello")
            assert host.read_until(b"hello\r\n") == (
                b"\r\nSEND OK\r\n"
                + b"".join(b"\r\n+QIOPEN: %d,%d\r\n" % (cid, 566 if cid % 2 else 0) for cid in range(8, 0, -1))
                + b'\r\n+QIURC: "recv",0,5\r\nhello\r\n')
            assert host.at("AT+QICLOSE=0;" + ";".join(f"+QICLOSE={cid}" for cid in range(2, 9, 2))) == OK
            _finish(emulator)
        finally:
            refusing.close()
    rs.replays(capsys, path)


# -- a refused connect the host, a deactivation or a restart ended first --------------------------
def test_a_refused_connect_closed_by_the_host_before_the_refusal_then_a_new_socket_replays(
        open_modem, emulator, tmp_path, capsys):
    """A 1 s round trip to a destination that refuses; the host closes it after 0.2 s (no
    +QIOPEN ever); the destination starts listening; a new socket to it (fast) echoes."""
    path = tmp_path / "refused_closed.trace"
    server = _Refusing()
    try:
        emulator.router.add_map("tcp.example", 7000, "127.0.0.1", server.port)
        host, advance, _ = _modem(open_modem, emulator, path)
        assert host.at(ATTACH) == OK
        _slow(emulator, 500)
        _tcp_open(host, 0, 1)
        advance(0.2)
        assert _state(host, 0) == 1
        assert host.at("AT+QICLOSE=0") == OK
        advance(2.0)                              # past the refusal's round trip: nothing
        assert host.at("AT+QISTATE=1,0") == OK
        server.listen()
        _slow(emulator, 0)
        _tcp_open(host, 1, 1)
        assert host.read_until(b"+QIOPEN: 1,0\r\n") == b"\r\n+QIOPEN: 1,0\r\n"
        _echo_on(host, 1, b"later")
        assert host.at("AT+QICLOSE=1") == OK
        _finish(emulator)
    finally:
        server.close()
    assert not any(r["kind"] == "open_result" and r["socket"] == 0 for r in rs.records(path))
    rs.replays(capsys, path)


def test_a_refused_connect_under_way_at_qideact_then_a_new_socket_replays(open_modem, emulator, tmp_path, capsys):
    """A slow connect to a destination that refuses, AT+QIDEACT=1 while it is opening
    (+QIOPEN: 0,570 -- not 566); the context again, the destination listening, a new socket
    to it echoes."""
    path = tmp_path / "refused_deact.trace"
    server = _Refusing()
    try:
        emulator.router.add_map("tcp.example", 7000, "127.0.0.1", server.port)
        host, advance, _ = _modem(open_modem, emulator, path)
        assert host.at(ATTACH) == OK
        _slow(emulator, 500)
        _tcp_open(host, 0, 1)
        assert _state(host, 0) == 1
        assert host.at("AT+QIDEACT=1") == OK
        assert host.read_until(b"+QIOPEN: 0,570\r\n") == b"\r\n+QIOPEN: 0,570\r\n"
        advance(2.0)
        assert host.at("AT+QISTATE") == OK
        _slow(emulator, 0)
        server.listen()
        assert host.at("AT+QIACT=1") == OK
        _tcp_open(host, 1, 1)
        assert host.read_until(b"+QIOPEN: 1,0\r\n") == b"\r\n+QIOPEN: 1,0\r\n"
        _echo_on(host, 1, b"again")
        assert host.at("AT+QICLOSE=1") == OK
        _finish(emulator)
    finally:
        server.close()
    rs.replays(capsys, path)


def test_a_refused_connect_under_way_at_a_restart_then_a_new_socket_replays(open_modem, emulator, tmp_path, capsys):
    """A slow connect that will be refused; AT+CFUN=1,1 while it is opening (no +QIOPEN);
    after the boot the destination listens and a new socket to it echoes."""
    path = tmp_path / "refused_restart.trace"
    server = _Refusing()
    try:
        emulator.router.add_map("tcp.example", 7000, "127.0.0.1", server.port)
        host, advance, _ = _modem(open_modem, emulator, path)
        assert host.at(ATTACH) == OK
        _slow(emulator, 500)
        _tcp_open(host, 0, 1)
        assert _state(host, 0) == 1
        assert host.at("AT+CFUN=1,1") == OK
        for _ in range(60):
            advance(0.5)
            try:
                host.read_until(b"SMS DONE\r\n", timeout=0.3)
                break
            except AssertionError:
                continue
        advance(2.0)                              # past the refusal's round trip
        assert host.at("ATE0").endswith(OK)       # (echo is on again after the boot)
        assert b"+QIOPEN: 0," not in bytes(host.transcript)
        _slow(emulator, 0)
        server.listen()
        assert host.at(ATTACH) == OK
        _tcp_open(host, 1, 1)
        assert host.read_until(b"+QIOPEN: 1,0\r\n") == b"\r\n+QIOPEN: 1,0\r\n"
        _echo_on(host, 1, b"booted")
        assert host.at("AT+QICLOSE=1") == OK
        _finish(emulator)
    finally:
        server.close()
    rs.replays(capsys, path)


# -- traces recorded under a scenario ------------------------------------------------------------
SCENARIO = """
[[step]]
when = { command = "+QICSGP", count = 1 }
op = "net"
latency_ms = 300

[[step]]
when = { command = "+QIOPEN", count = 1 }
op = "connect_refuse"
count = 1

[[step]]
when = { command = "+QIOPEN", count = 3 }
op = "dns_fail"
count = 1

[[step]]
when = { command = "+QSSLOPEN", count = 1 }
op = "connect_refuse"
count = 1

[[step]]
when = { command = "+QSSLOPEN", count = 2 }
op = "dns_fail"
count = 1

[[step]]
when = { command = "+QICLOSE", count = 1 }
op = "net"
latency_ms = 0
"""


def test_a_trace_recorded_under_a_refuse_and_dns_fail_scenario_with_latency_replays_with_it(
        open_modem, emulator, pki, tmp_path, capsys):
    """A 600 ms round trip from the context's configuration on: AT+QIOPEN refused (polled while opening), a retry to
    the same destination connects and echoes, a third open's lookup fails (polled), AT+QSSLOPEN
    refused then unresolved (polled), a third AT+QSSLOPEN connects and echoes."""
    path, scenario = tmp_path / "scenario.trace", tmp_path / "scenario.toml"
    scenario.write_text(SCENARIO)
    with TcpServer(behave=_echo_close) as server, TlsServer(pki.server, mode="echo") as tls:
        emulator.router.add_map("tcp.example", 7000, "127.0.0.1", server.port)
        emulator.router.add_map(HOST, 443, "127.0.0.1", tls.port)
        host, advance, port = _modem(open_modem, emulator, path)
        emulator.run_scenario(scenario)
        assert host.at(ATTACH) == OK
        assert host.at('AT+QSSLCFG="seclevel",1,0') == OK
        _tcp_open(host, 0, 1)
        assert _state(host, 0) == 1
        assert _advance_until(host, advance, b"+QIOPEN: 0,566\r\n", step=0.25) == b"\r\n+QIOPEN: 0,566\r\n"
        _tcp_open(host, 0, 1)
        assert _advance_until(host, advance, b"+QIOPEN: 0,0\r\n", step=0.25) == b"\r\n+QIOPEN: 0,0\r\n"
        _tcp_open(host, 1, 0)
        assert _state(host, 1) == 1
        assert _advance_until(host, advance, b"+QIOPEN: 1,565\r\n", step=0.25) == b"\r\n+QIOPEN: 1,565\r\n"
        rs.qisend(host, 0, b"under")
        assert _advance_until(host, advance, b"under\r\n", step=0.25) == b'\r\n+QIURC: "recv",0,5\r\nunder\r\n'
        for code in (566, 565, 0):
            assert host.at(f'AT+QSSLOPEN=1,1,2,"{HOST}",443,1') == OK
            assert re.fullmatch(rb'\r\n\+QSSLSTATE: 2,"SSLClient","[^"]+",443,\d+,1,1,\d+,1,"usbmodem",1\r\n\r\nOK\r\n',
                                host.at("AT+QSSLSTATE=2"))
            assert _advance_until(host, advance, b"+QSSLOPEN: 2,%d\r\n" % code, step=0.25) == \
                b"\r\n+QSSLOPEN: 2,%d\r\n" % code
        assert host.send_data(2, b"secure") == b"\r\nSEND OK\r\n"
        assert _advance_until(host, advance, b"secure\r\n", step=0.25) == b'\r\n+QSSLURC: "recv",2,6\r\nsecure\r\n'
        assert host.at("AT+QICLOSE=0") == OK        # (the scenario lifts the latency first)
        assert host.at("AT+QSSLCLOSE=2") == OK
        _finish(emulator)
    assert [r["op"] for r in rs.records(path) if r["kind"] == "scenario"][1:] == \
        ["connect_refuse", "dns_fail", "connect_refuse", "dns_fail", "net"]
    rs.replays(capsys, path, "--scenario", str(scenario))


# -- changed traces ------------------------------------------------------------------------------
def test_a_refused_opens_changed_or_removed_result_is_named(open_modem, emulator, tmp_path, capsys):
    """A refused AT+QIOPEN over a slow network, then a good one to the same destination: the
    trace replays; its refusal's open_result made a dns failure shows +QIOPEN: 0,565; removed
    (the server held it), the replay never says +QIOPEN: 0,566."""
    path = tmp_path / "refused_changed.trace"
    server = _Refusing()
    try:
        emulator.router.add_map("tcp.example", 7000, "127.0.0.1", server.port)
        host, advance, _ = _modem(open_modem, emulator, path)
        assert host.at(ATTACH) == OK
        _slow(emulator, 200)
        _tcp_open(host, 0, 0)
        assert _state(host, 0) == 1
        assert _advance_until(host, advance, b"+QIOPEN: 0,566\r\n") == b"\r\n+QIOPEN: 0,566\r\n"
        server.listen()
        _slow(emulator, 0)
        _tcp_open(host, 0, 1)
        assert host.read_until(b"+QIOPEN: 0,0\r\n") == b"\r\n+QIOPEN: 0,0\r\n"
        _echo_on(host, 0, b"echo")
        assert host.at("AT+QICLOSE=0") == OK
        _finish(emulator)
    finally:
        server.close()
    rs.replays(capsys, path)
    pick = lambda r: r["kind"] == "open_result" and r.get("code") == 566      # noqa: E731
    changed = rs.changed(tmp_path, path, pick, lambda r: {**r, "code": 565, "failure": "dns"})
    code, out = rs.replay(capsys, changed)
    assert code == 1 and "+QIOPEN: 0,565" in out.split("got:")[1], out
    recs = [r for r in rs.records(path) if not pick(r)]
    code, out = rs.replay(capsys, rs.save(tmp_path, "removed.trace", recs))
    assert code == 1 and "+QIOPEN: 0,566" not in out.split("got:")[1], out


# -- names no DNS can take -----------------------------------------------------------------------
# BUG: AT+QIOPEN of a host "." (or "[]") is answered +QIOPEN: 0,565 (Router.resolve: "not a valid
# host name" / not routed) and recorded as a "dns" failure; scripts_of (trace.py:730-736) now
# gives it a stand-in, and replay_records routes its name to it with Router.add_map
# (trace.py:1575, no guard), which raises ValueError("route '':7000: no host name") for a name
# whose name_key is empty (emulator/io/network.py:174-176) -- the replay of a
# faithful trace dies with a traceback instead of replaying (before 0a56aaa such an open was
# left unrouted and failed again).
# Was a bug, fixed (a refused or unresolved open waits in the replay for its recorded moment, then
# fails as recorded -- no stand-in connection: _ReplayFaults.failure_wait; refusals count as ended
# connects in the moments): replay raises ValueError (route "": no host name) for a trace with
# AT+QIOPEN of host "." (565)
def test_an_open_of_a_name_no_dns_takes_replays(open_modem, emulator, tmp_path, capsys):
    """AT+QIOPEN of ".", "a..b" and "[]" (565 each), then AT+QISTATE (nothing)."""
    path = tmp_path / "bad_names.trace"
    host, _, _ = _modem(open_modem, emulator, path, manual=False)
    assert host.at(ATTACH) == OK
    for name in ("a..b", ".", "[]"):
        _tcp_open(host, 0, 1, name=name)
        assert host.read_until(b"+QIOPEN: 0,565\r\n") == b"\r\n+QIOPEN: 0,565\r\n"
    assert host.at("AT+QISTATE") == OK
    _finish(emulator)
    rs.replays(capsys, path)


# -- transparent mode, a hang-up -----------------------------------------------------------------
def test_refused_and_unresolved_transparent_mode_opens_over_a_slow_network_replay(
        open_modem, emulator, tmp_path, capsys):
    """<access_mode> 2 over a 1 s round trip: a refused connect (nothing for 0.5 s, then
    ERROR; AT+QIGETERROR 566), a failed lookup (dns_fail: ERROR a round trip later, 565), then
    the destination listens and CONNECT, data, "+++"."""
    path = tmp_path / "transparent_refused.trace"
    server = _Refusing()
    try:
        emulator.router.add_map("tcp.example", 7000, "127.0.0.1", server.port)
        host, advance, _ = _modem(open_modem, emulator, path)
        assert host.at(ATTACH) == OK
        _slow(emulator, 500)
        for code in (566, 565):
            if code == 565:
                assert emulator.control("dns_fail", count=1)["ok"]
            host.write('AT+QIOPEN=1,0,"TCP","tcp.example",7000,0,2\r\n')
            advance(0.5)
            assert host.quiet_for(0.2) == b""
            assert _advance_until(host, advance, b"ERROR\r\n") == ERROR
            assert host.at("AT+QIGETERROR").startswith(b"\r\n+QIGETERROR: %d," % code)
        server.listen()
        _slow(emulator, 0)
        assert host.at('AT+QIOPEN=1,0,"TCP","tcp.example",7000,0,2') == b"\r\nCONNECT\r\n"
        host.write(b"online")
        advance(0.5)                              # (the online data's wait time, on the modem's clock)
        assert host.read_exactly(6) == b"online"
        advance(1.5)
        host.write(b"+++")
        advance(1.5)
        assert host.read_until(b"OK\r\n") == OK
        assert host.at("AT+QICLOSE=0") == OK
        _finish(emulator)
    finally:
        server.close()
    rs.replays(capsys, path)


def test_a_refusal_that_comes_while_nobody_holds_the_port_replays(open_modem, emulator, tmp_path, capsys):
    """AT+QIOPEN over a 1 s round trip to a destination that refuses; the host closes the port;
    the refusal comes meanwhile; a new host (CR LF) opens the port: AT+QISTATE=1,0 empty, the
    destination listens, a new open on the same id echoes."""
    path = tmp_path / "refused_hangup.trace"
    server = _Refusing()
    try:
        emulator.router.add_map("tcp.example", 7000, "127.0.0.1", server.port)
        host, advance, port = _modem(open_modem, emulator, path)
        assert host.at(ATTACH) == OK
        _slow(emulator, 500)
        _tcp_open(host, 0, 1)
        emulator.wait_received(port, host.written, 10)
        host.close()
        deadline = time.monotonic() + 10
        while emulator.run(lambda: port.port.attached):
            assert time.monotonic() < deadline, "the modem never saw the hang-up"
            time.sleep(0.01)
        emulator.advance(port, 1.5)
        _slow(emulator, 0)
        server.listen()
        host = Host(port.path)
        host.line_end = b"\r\n"
        try:
            assert host.at("AT+QISTATE=1,0") == OK
            _tcp_open(host, 0, 1)
            assert host.read_until(b"+QIOPEN: 0,0\r\n") == b"\r\n+QIOPEN: 0,0\r\n"
            _echo_on(host, 0, b"back")
            assert host.at("AT+QICLOSE=0") == OK
            _finish(emulator)
        finally:
            host.close()
    finally:
        server.close()
    assert [r["code"] for r in rs.records(path) if r["kind"] == "open_result"] == [566, 0]
    rs.replays(capsys, path)


# -- a TCP and a UDP socket to one name and port -------------------------------------------------
# BUG: ReplayPeer.start gives every destination's stand-ins one route each by (name, port) --
# a TCP stand-in server for the streams, a UDP one for the datagrams (trace.py:1032-1040) -- and
# the router keeps one route per (name, port) (Router.add_map): the UDP stand-in's, added last,
# wins.  A TCP open whose lookup failed (dns_fail) now has a TCP stand-in (0a56aaa) and is no
# longer failed by _ReplayFaults ("dns" is kept for UDP/DTLS only), so the replay's TCP connect
# goes to the UDP stand-in's port, where nothing listens over TCP: refused at once,
# +QIOPEN: 0,566 where the recording has 565.  (Before 0a56aaa _ReplayFaults failed it "dns"
# again.)  Services on one port over both (DNS 53, QUIC/HTTPS 443, SIP 5060) are common.
# Was a bug, fixed (a refused or unresolved open waits in the replay for its recorded moment, then
# fails as recorded -- no stand-in connection: _ReplayFaults.failure_wait; refusals count as ended
# connects in the moments): a TCP open whose lookup failed replays as refused (566, not 565) when
# a UDP socket used the same name and port: the UDP stand-in's route wins
def test_an_unresolved_tcp_open_beside_a_udp_socket_to_the_same_name_and_port_replays(
        open_modem, emulator, tmp_path, capsys):
    """dns_fail: AT+QIOPEN "TCP" dual.example:5060 fails (565); a UDP socket to
    dual.example:5060 echoes a datagram."""
    path = tmp_path / "tcp_udp.trace"
    with UdpEchoServer() as udp:
        emulator.router.add_map("dual.example", 5060, "127.0.0.1", udp.port)
        host, _, _ = _modem(open_modem, emulator, path, manual=False)
        assert host.at(ATTACH) == OK
        assert emulator.control("dns_fail", count=1)["ok"]
        _tcp_open(host, 0, 1, name="dual.example", port=5060)
        assert host.read_until(b"+QIOPEN: 0,565\r\n") == b"\r\n+QIOPEN: 0,565\r\n"
        assert host.at('AT+QIOPEN=1,1,"UDP","dual.example",5060,0,1') == OK
        assert host.read_until(b"+QIOPEN: 1,0\r\n") == b"\r\n+QIOPEN: 1,0\r\n"
        _echo_on(host, 1, b"sip")
        assert host.at("AT+QICLOSE=1") == OK
        _finish(emulator)
    rs.replays(capsys, path)


# -- more that replays ---------------------------------------------------------------------------
def test_a_refused_open_then_lookups_and_pings_of_its_name_replay(open_modem, emulator, tmp_path, capsys):
    """AT+QIOPEN refused (the destination is not listening); AT+QIDNSGIP of its name answers
    the modem's DNS entry, AT+QPING of it answers; the destination listens and a new open on
    the same id connects."""
    path = tmp_path / "refused_lookups.trace"
    server = _Refusing()
    try:
        emulator.router.add_map("tcp.example", 7000, "127.0.0.1", server.port)
        emulator.router.add_dns("tcp.example", "106.12.79.254")
        host, _, _ = _modem(open_modem, emulator, path, manual=False)
        assert host.at(ATTACH) == OK
        _tcp_open(host, 0, 0)
        assert host.read_until(b"+QIOPEN: 0,566\r\n") == b"\r\n+QIOPEN: 0,566\r\n"
        assert host.at('AT+QIDNSGIP=1,"tcp.example"') == OK
        assert host.read_until(b'"106.12.79.254"\r\n').endswith(b'\r\n+QIURC: "dnsgip","106.12.79.254"\r\n')
        assert host.at('AT+QPING=1,"tcp.example",1,1') == OK
        assert host.read_until(re.compile(rb"\+QPING: 0,1,1,0,\d+,\d+,\d+\r\n")).startswith(
            b'\r\n+QPING: 0,"106.12.79.254",32,')
        server.listen()
        _tcp_open(host, 0, 1)
        assert host.read_until(b"+QIOPEN: 0,0\r\n") == b"\r\n+QIOPEN: 0,0\r\n"
        _echo_on(host, 0, b"after")
        assert host.at("AT+QICLOSE=0") == OK
        _finish(emulator)
    finally:
        server.close()
    rs.replays(capsys, path)


def test_one_refusal_that_comes_while_the_host_is_at_a_prompt_replays(open_modem, emulator, tmp_path, capsys):
    """Socket 1's connect (0.8 s round trip) is refused while the host sits at socket 0's
    "> " prompt: its +QIOPEN: 1,566 follows SEND OK, then socket 0's echo."""
    path = tmp_path / "prompt_one.trace"
    refusing = _Refusing()
    with TcpServer(behave=_echo_close) as server:
        try:
            emulator.router.add_map("tcp.example", 7000, "127.0.0.1", server.port)
            emulator.router.add_map("refuse.example", 7001, "127.0.0.1", refusing.port)
            host, advance, _ = _modem(open_modem, emulator, path)
            assert host.at(ATTACH) == OK
            _tcp_open(host, 0, 1)
            assert host.read_until(b"+QIOPEN: 0,0\r\n") == b"\r\n+QIOPEN: 0,0\r\n"
            _slow(emulator, 400)
            _tcp_open(host, 1, 1, name="refuse.example", port=7001)
            _slow(emulator, 0)
            host.write("AT+QISEND=0,5\r\n")
            assert host.read_until(b"> ") == b"\r\n> "
            advance(2.0)
            for byte in b"hello":
                host.write(bytes([byte]))
            assert host.read_until(b"hello\r\n") == (b"\r\nSEND OK\r\n\r\n+QIOPEN: 1,566\r\n"
                                                       b'\r\n+QIURC: "recv",0,5\r\nhello\r\n')
            assert host.at("AT+QICLOSE=0") == OK
            _finish(emulator)
        finally:
            refusing.close()
    rs.replays(capsys, path)


# -- a trace from the real network ---------------------------------------------------------------
# BUG: the replay is offline and shows a name the address the recording's DNS gave only where the
# trace says so (_dns_answers, trace.py: AT+QIDNSGIP's answers and a successful open's "shown");
# a refused open's open_result has no "shown".  Before 0a56aaa a refused connect failed at once
# in the replay, so no answer could show its address; now it is opening for the recorded round
# trip, and an AT+QISTATE meanwhile shows the address of a name the replay's router only routes:
# made_up_address(name) (Router.display_address, emulator/io/network.py:236-243), where the
# recording showed the real DNS's answer ("127.0.0.1" for "localhost", the stand-in for a real
# name).  README: "a trace from a real network replays offline".  (The open_result of a refused
# open could carry "shown" too.)
# Was a bug, fixed (a refused or unresolved open waits in the replay for its recorded moment, then
# fails as recorded -- no stand-in connection: _ReplayFaults.failure_wait; refusals count as ended
# connects in the moments): AT+QISTATE while a refused connect is under way shows a made-up
# address in the replay of a real-network trace (the real DNS's answer is not in the trace)
def test_a_refused_connect_on_the_real_network_polled_while_opening_replays(tmp_path, capsys):
    """An emulator on the real network (localhost resolves to 127.0.0.1 through the real
    resolver): AT+QIOPEN to localhost:<a port that refuses> over a 600 ms round trip,
    AT+QISTATE while opening shows 127.0.0.1, then +QIOPEN: 0,566."""
    path = tmp_path / "online_refused.trace"
    refusing = _Refusing()
    writer = TraceWriter(path)
    try:
        with BackgroundEmulator(offline=False) as emu:
            port = emu.add_modem("ec2x", state_dir=tmp_path / "state", trace=writer, manual_time=True)
            host = Host(port.path)
            host.line_end = b"\r\n"
            try:
                emu.run(port.port.look_for_host)
                assert host.at("ATE0").endswith(OK)
                advance = emu.advancer(port, host)
                assert host.at(ATTACH) == OK
                assert emu.control("net", latency_ms=300)["ok"]
                assert host.at(f'AT+QIOPEN=1,0,"TCP","localhost",{refusing.port},0,1') == OK
                deadline = time.monotonic() + 10          # the real resolver's answer (a thread)
                while emu.run(lambda: emu.router.display_address("localhost")) != "127.0.0.1":
                    assert time.monotonic() < deadline, "localhost never resolved"
                    time.sleep(0.01)
                answer = host.at("AT+QISTATE=1,0")
                assert re.fullmatch(rb'\r\n\+QISTATE: 0,"TCP","127\.0\.0\.1",%d,\d+,1,1,\d+,1,"usbmodem"\r\n\r\nOK\r\n'
                                    % refusing.port, answer), answer
                assert _advance_until(host, advance, b"+QIOPEN: 0,566\r\n") == b"\r\n+QIOPEN: 0,566\r\n"
                assert host.at("AT+QISTATE=1,0") == OK
                emu.run(lambda: None)
            finally:
                host.close()
    finally:
        refusing.close()
        writer.close()
    rs.replays(capsys, path)


def test_a_refusal_slower_than_ten_seconds_polled_by_the_host_replays(open_modem, emulator, tmp_path, capsys):
    """A 12 s round trip (6 s latency) to a destination that refuses: AT+QISTATE at 11 s says
    opening, +QIOPEN: 0,566 at 12 s, AT+QISTATE empty -- replayed with --max-gap 1 and as
    recorded."""
    path = tmp_path / "very_slow_refusal.trace"
    server = _Refusing()
    try:
        emulator.router.add_map("tcp.example", 7000, "127.0.0.1", server.port)
        host, advance, _ = _modem(open_modem, emulator, path)
        assert host.at(ATTACH) == OK
        _slow(emulator, 6000)
        _tcp_open(host, 0, 1)
        advance(11.0)
        assert _state(host, 0) == 1
        advance(1.5)
        assert host.read_until(b"+QIOPEN: 0,566\r\n") == b"\r\n+QIOPEN: 0,566\r\n"
        _slow(emulator, 0)
        assert host.at("AT+QISTATE=1,0") == OK
        _finish(emulator)
    finally:
        server.close()
    rs.replays(capsys, path, "--max-gap", "1")
    rs.replays(capsys, path)


# BUG: the EC2x's negotiatetime bounds the TLS handshake, counted from the TCP connect
# (SslSocket._open_steps, emulator/sockets/ssl_socket.py:437-452: the wait starts once the
# transport is made).  In the replay the connect to the stand-in is made at once, so that wait
# starts at the open, while the stand-in holds its header -- since 0a56aaa a refusal's too --
# until the recorded moment (after the host's AT+QSSLSTATE at 11 s): the replay's handshake
# timer fires at 10 s, +QSSLOPEN: 1,569 (operation timeout) and AT+QSSLSTATE=1 shows no socket,
# where the recording's connect was still under way (opening) and was refused (566) at 12 s.
# (The same cause fails a successful open whose round trip plus handshake passed negotiatetime:
# the next test; before 0a56aaa a refused one failed at once instead.)
# Was a bug, fixed (a refused or unresolved open waits in the replay for its recorded moment, then
# fails as recorded -- no stand-in connection: _ReplayFaults.failure_wait; refusals count as ended
# connects in the moments): a refused AT+QSSLOPEN slower than negotiatetime times out (569) in the
# replay: the handshake timer starts at the stand-in's instant connect
def test_a_refused_ssl_open_slower_than_its_negotiatetime_polled_by_the_host_replays(
        open_modem, emulator, tmp_path, capsys):
    """negotiatetime 10 s (the handshake's limit, counted from the TCP connect); a 12 s round
    trip to a destination that refuses: AT+QSSLSTATE at 11 s says opening, +QSSLOPEN: 1,566
    at 12 s (the connect never succeeded, so no handshake was timed)."""
    path = tmp_path / "ssl_slow_refusal.trace"
    server = _Refusing()
    try:
        emulator.router.add_map(HOST, 443, "127.0.0.1", server.port)
        host, advance, _ = _modem(open_modem, emulator, path)
        assert host.at(ATTACH) == OK
        assert host.at('AT+QSSLCFG="negotiatetime",1,10') == OK
        _slow(emulator, 6000)
        assert host.at(f'AT+QSSLOPEN=1,1,1,"{HOST}",443,0') == OK
        advance(11.0)
        assert re.fullmatch(rb'\r\n\+QSSLSTATE: 1,"SSLClient","[^"]+",443,\d+,1,1,\d+,0,"usbmodem",1\r\n\r\nOK\r\n',
                            host.at("AT+QSSLSTATE=1"))
        advance(1.5)
        assert host.read_until(b"+QSSLOPEN: 1,") == b"\r\n+QSSLOPEN: 1,"
        assert host.read_until(b"\r\n") == b"566\r\n"
        _slow(emulator, 0)
        assert host.at("AT+QSSLSTATE=1") == OK
        _finish(emulator)
    finally:
        server.close()
    rs.replays(capsys, path)


# Was a bug (not new in 0a56aaa, the same cause as above): a successful AT+QSSLOPEN whose 8 s connect
# plus 4 s handshake passed negotiatetime (10 s) -- allowed: the limit counts from the connect --
# replays as +QSSLOPEN: 1,569 at 10 s, and the AT+QSSLSTATE the host sent at 11 s shows nothing.
# Was a bug, fixed (the trace records an SSL socket's TCP connect; the replay's is complete at that moment): an SSL open whose connect plus handshake passed negotiatetime times out (569) in the replay: the handshake timer starts at the stand-in's instant connect
def test_an_ssl_open_whose_connect_and_handshake_pass_its_negotiatetime_replays(
        open_modem, emulator, pki, tmp_path, capsys):
    """negotiatetime 10 s, a 4 s round trip: connect at 4 s, handshake done at 12 s
    (+QSSLOPEN: 1,0), AT+QSSLSTATE at 11 s says opening; an echo."""
    path = tmp_path / "ssl_slow_open.trace"
    with TlsServer(pki.server, mode="echo") as tls:
        emulator.router.add_map(HOST, 443, "127.0.0.1", tls.port)
        host, advance, _ = _modem(open_modem, emulator, path)
        assert host.at(ATTACH) == OK
        assert host.at('AT+QSSLCFG="seclevel",1,0;+QSSLCFG="negotiatetime",1,10') == OK
        _slow(emulator, 2000)
        assert host.at(f'AT+QSSLOPEN=1,1,1,"{HOST}",443,1') == OK
        advance(11.0)
        assert re.fullmatch(rb'\r\n\+QSSLSTATE: 1,"SSLClient","[^"]+",443,\d+,1,1,\d+,1,"usbmodem",1\r\n\r\nOK\r\n',
                            host.at("AT+QSSLSTATE=1"))
        assert _advance_until(host, advance, b"+QSSLOPEN: 1,0\r\n", step=1.0) == b"\r\n+QSSLOPEN: 1,0\r\n"
        _slow(emulator, 0)
        assert host.send_data(1, b"late") == b"\r\nSEND OK\r\n"
        assert host.read_until(b"late\r\n") == b'\r\n+QSSLURC: "recv",1,4\r\nlate\r\n'
        assert host.at("AT+QSSLCLOSE=1") == OK
        _finish(emulator)
    rs.replays(capsys, path)
