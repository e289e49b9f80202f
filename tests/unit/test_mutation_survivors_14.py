"""Tests from a manual mutation-testing pass (round 14) over the code changed in
3f4d77c..485ff70: tls_engine/session.py (the held certificate verdict: _hold_verdict,
_judge_certificate, _certificate_less, _out_mark, the step state), emulator/tools/trace.py
(the replay's refusals: _ReplayFaults, _refusal, ReplayPeer._expect / _given_up / close /
moment_reached), emulator/io/network.py (Router.answered_address / display_address,
NetFaults.failure_wait), emulator/sockets/ssl_socket.py (_after) and emulator/commands/
device.py (_canonical / _in_sequence, the new AT+QCFG items in profiles/ec2x.toml).
Each test pins a behaviour a small change (the mutant named in its docstring) left the
existing tests passing on; expected values come from Mbed TLS itself (python-mbedtls), the
modules' docstrings, README.md and docs/behaviour.md, not from the emulator's output.

Mutants applied: 84 (tls_engine/session.py 30, device.py + ec2x.toml 18, network.py 5,
ssl_socket.py 6, trace.py 25).  Killed by existing tests: 56.  Killed by the tests below: 18
(S3 was a strict xfail, a bug: fixed in _sniff_now).  Not killed, no test (equivalent in practice): 10.

Killed by existing tests -- session: S2 RSA-PSK counted certificate-less, S4 no PSK skip,
S5 the seclevel-0 test inverted, S8/S9/S14 the held state or alert dropped, S10 `<` for `<=`,
S11 no _cert_step_seen, S13 no del of the next flight, S17/S26 the step flag, S18 steps after
the verdict, S19-S23 and S25/S29/S30 _fail_from_tls_error's branches and constants, S27 no
native layer.  device / ec2x.toml: D4-D7, D9-D18 (the sequence rules, the new items' forms).
network: N2/N3 one of the two answers dropped.  ssl_socket: X1 dns without its wait, X2 the
link left unclosed, X3 no wait.  trace: T1/T2/T19 a refusal's "shown", T3/T4 refusals not
counted, T5/T9/T21 no fail_at, T12 dns made refuse, T13/T14/T16 close's grace and naming,
T15/T17/T24 the schedule of a wait for a send, T18 (test_adversarial_replay_fidelity_2).

Equivalent in practice:
- S6 the malformed-Certificate branch falling through to the chain check (no `continue`):
  the verdict held first stays (_hold_verdict keeps it), nothing else reads the chain.
- S7 _hold_verdict overwriting a held verdict: TLS judges only the first Certificate (the
  sniffer skips later ones: `_cert_seen and not dtls`), DTLS never holds one.
- S12 _judge_certificate without take_outgoing(): every path to it has collected the
  wrapper's output already, and Mbed TLS writes nothing between the ClientHello and the step
  after the Certificate.
- S16 receive() without its post-loop _judge_certificate(): the wrapper's do_handshake is one
  step, so after the step that took the Certificate the loop always comes back to its top,
  where the held verdict is applied (tried: Certificate alone, split records, undrained).
- S24 _catch_up() before the held verdict: _unsniffed is only used without a verifier
  (_lazy_sniff), a verdict is only held with one.
- S28 the post-loop judge without `state == "handshaking"`: after a failure the wrapper's
  context is reset (state 0 <= SERVER_CERTIFICATE) and _fail is idempotent.
- N4 display_address making up an address from `host`, not _dns_key(host): made_up_address
  applies _dns_key itself.
- X4 / X5 SslSocket keeping _fault_wait after use / asking failure_wait for any fault: open()
  sets _fault_wait afresh; _ReplayFaults has a moment only for a refuse / dns fault it gave.
- T20 _serve not aborting the stand-in's connection when the replay ends during its head
  wait: the replay is over, nothing is compared after it (21 quiet / slow replays tried).
Killed by the tests below: S1, S3, S15, D1, D2, D3, D8 (through _in_sequence only), N1, N5,
X6 (_after not re-raising), T7 and T8 (through _refusal only: the replayed round trips order
failed lookups anyway; no trace has a code-0 answer with a failure), T10, T22, T23, T26, T27
(T25, _expect ignoring the step's time, like T24 killed by the idle-host replays, too).
"""
from __future__ import annotations

import asyncio
import inspect

import pytest
from mbedtls import tls as mbtls
from mbedtls.exceptions import TLSError

from emulator.commands.device import _canonical, _in_sequence, form_groups
from emulator.io.network import Router, made_up_address
from emulator.sockets.ssl_socket import _after
from emulator.testing.peers import TcpServer
from emulator.tools import trace as trace_mod
from emulator.tools.trace import ReplayPeer, _ReplayFaults, _refusal
from tests.e2e import replay_support as rs
from tests.e2e.test_review_changes_1205_c import (DONE, alerts_in, certificate, ders_of, hs, rec,
                                                  records_of, server_hello)
from tls_engine import TlsClientSession, TlsFailure, TlsSettings
from tls_engine.errors import HandshakeComplete

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

RSA_CBC = 0x002F          # TLS_RSA_WITH_AES_128_CBC_SHA
PSK_CBC = 0x008C          # TLS_PSK_WITH_AES_128_CBC_SHA
DHE_PSK_GCM = 0x00AA      # TLS_DHE_PSK_WITH_AES_128_GCM_SHA256
ECDHE_PSK_CBC = 0xC035    # TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA
MBED_NAMES = {PSK_CBC: "TLS-PSK-WITH-AES-128-CBC-SHA", DHE_PSK_GCM: "TLS-DHE-PSK-WITH-AES-128-GCM-SHA256",
              ECDHE_PSK_CBC: "TLS-ECDHE-PSK-WITH-AES-128-CBC-SHA"}


# -- hand-made server bytes (test_review_changes_1205_c's) -------------------------------------
MALFORMED_CERTIFICATE = hs(11, b"\x00\x00\x05\x00\x00\x09abc")    # (its list's lengths disagree)


@pytest.fixture(scope="module")
def other_name(pki):
    """A chain valid under the CA, but for another name than the one dialled (localhost)."""
    return ders_of(pki.issue("mut14-other", "other.example"))


def engine(pki, flight: bytes, seclevel: int = 1, psk: bool = True, drain: bool = True):
    """The engine dialling localhost (a PSK and the CA configured when `psk`), the server's
    bytes given in one receive().  -> (state, [TlsFailure | HandshakeComplete], client hello,
    the bytes the client sends after it).  drain=False: the ClientHello is not taken out
    before the server's bytes come (outgoing() then holds both)."""
    kw = {"psk_identity": b"modem", "psk_key": b"k" * 16} if psk else {}
    session = TlsClientSession(TlsSettings(server_name="localhost", seclevel=seclevel, ca_pem=pki.ca.cert_pem,
                                           ca_label="RAM:cacert.pem", **kw))
    session.start()
    hello = b"".join(session.outgoing()) if drain else b""
    session.receive(flight)
    out = b"".join(session.outgoing())
    ends = [e for e in session.events() if isinstance(e, (TlsFailure, HandshakeComplete))]
    return session.state, ends, hello, out


def mbedtls_psk(suite: int, flight: bytes):
    """Mbed TLS itself (python-mbedtls, a PSK and that suite) given `flight` after its
    ClientHello: (its error, what it sent after the ClientHello)."""
    client = mbtls.ClientContext(mbtls.TLSConfiguration(
        validate_certificates=True, trust_store=mbtls.TrustStore(), pre_shared_key=("modem", b"k" * 16),
        ciphers=[MBED_NAMES[suite]])).wrap_buffers("localhost")
    fed = False
    for _ in range(60):
        try:
            client.do_handshake()
        except (mbtls.WantReadError, mbtls.WantWriteError):
            pass
        except TLSError as exc:
            return abs(exc.err), client.peek_outgoing(1 << 16)
        out = client.peek_outgoing(1 << 16)
        client.consume_outgoing(len(out))
        if not fed and out:
            client.receive_from_network(flight)
            fed = True
        elif out:
            return None, out
    return None, b""


# == tls_engine/session.py: the held verdict ======================================================
@pytest.mark.parametrize("suite", [ECDHE_PSK_CBC, DHE_PSK_GCM])
def test_a_certificate_in_an_ephemeral_psk_suite_is_mbedtlss_failure_not_the_chains(pki, other_name, suite):
    """Mutant S1 (_certificate_less without "TLS_ECDHE_PSK_"; the existing test has only
    TLS_PSK_): in ECDHE-PSK and DHE-PSK suites the server sends no Certificate (Mbed TLS skips
    ssl_parse_certificate; the message is unexpected where the ServerKeyExchange should be:
    -0x7700, alert unexpected_message).  The sniffer must not judge the chain (a wrong-name
    one here: verify_failed + bad_certificate): the open fails as Mbed TLS does."""
    flight = rec(22, server_hello(suite=suite) + certificate(other_name) + DONE)
    err, mbed_out = mbedtls_psk(suite, flight)
    assert err == 0x7700, hex(err or 0)
    state, ends, _, out = engine(pki, flight)
    assert state == "failed"
    assert [e.kind for e in ends] == ["handshake_failed"], ends
    assert alerts_in(out) == alerts_in(mbed_out) == [10], (out.hex(), mbed_out.hex())


def test_a_verdict_on_the_certificate_keeps_a_clienthello_not_yet_taken_out(pki, other_name):
    """Mutant S15 (receive() setting _out_mark to 0, not to what _tls_out holds): the verdict
    drops what Mbed TLS queued *since this receive() began* (_judge_certificate's docstring)
    -- a ClientHello queued by start() and not yet taken by outgoing() is still sent, before
    the alert, never lost."""
    state, ends, _, out = engine(pki, rec(22, server_hello(suite=RSA_CBC) + certificate(other_name) + DONE),
                                 psk=False, drain=False)
    assert state == "failed" and [e.kind for e in ends] == ["verify_failed"], ends
    records = records_of(out)
    assert [ct for ct, _ in records] == [22, 21], out[:64].hex()
    assert records[0][1][0] == 1                     # the ClientHello, whole
    assert alerts_in(out) == [42]                    # bad_certificate: the chain's wrong name


# Was a bug, fixed (_sniff_now skips a certificate-less suite's Certificate at every seclevel): seclevel 0, PSK suite: a malformed Certificate (a message Mbed TLS never parses in a certificate-less suite) fails as protocol_error 'malformed server Certificate message' where seclevel 1 (and Mbed TLS) give handshake_failed -0x7B80 -- tls_engine/session.py _sniff_now skips certificate-less suites only when _verifier is set
def test_a_malformed_certificate_in_a_psk_suite_fails_alike_at_seclevel_0_and_1(pki):
    """Mutant S3 (_certificate_less applied at every seclevel, not only with a verifier) is the
    consistent behaviour: the same server bytes fail the same way at seclevel 0 and 1 (the
    held verdict's rule: "its failure and its alert (or none) are the open's, as at seclevel
    0").  In a PSK suite Mbed TLS takes the Certificate as the unexpected message where the
    ServerHelloDone should be (-0x7B80, decode_error) whether it is well formed or not."""
    flight = rec(22, server_hello(suite=PSK_CBC) + MALFORMED_CERTIFICATE + DONE)
    err, mbed_out = mbedtls_psk(PSK_CBC, flight)
    assert err == 0x7B80, hex(err or 0)
    results = {}
    for seclevel in (0, 1):
        state, ends, _, out = engine(pki, flight, seclevel=seclevel)
        assert state == "failed" and alerts_in(out) == alerts_in(mbed_out) == [50], (seclevel, out.hex())
        results[seclevel] = [e.kind for e in ends]
    assert results[1] == ["handshake_failed"], results
    assert results[0] == results[1], results


# == emulator/commands/device.py: zero-padded groups and scan sequences ===========================
def test_a_plain_range_with_a_single_zero_low_bound_is_a_number_range_not_a_sequence():
    """Mutant D1 (the sequence rule taking a one-digit low bound: `len(lo) > 0`): only a
    zero-padded low bound ("00") makes a group of codes; "(0-10)" is a number range -- 7 and 10
    are taken as numbers (no leading zeros kept, _canonical's docstring), 11 is not."""
    (groups,) = form_groups("(0-10)")
    assert _canonical("7", groups) == "7"
    assert _canonical("10", groups) == "10"
    assert _canonical("007", groups) == "7"
    assert _canonical("11", groups) is None
    (wide,) = form_groups("(0-255)")
    assert _canonical("200", wide) == "200"                  # (as codes it would repeat 0)


def test_an_equal_width_zero_padded_range_keeps_its_low_bound():
    """Mutant D2 (`len(hi) >= len(lo)`: an equal-width group taken for a one-code sequence):
    "(05-10)" is a zero-padded range -- "03" is below it (a sequence would take any code from
    1), "07" is in it, kept as given; widths other than the bounds' are refused."""
    (groups,) = form_groups("(05-10)")
    assert _canonical("07", groups) == "07"
    assert _canonical("03", groups) is None
    assert _canonical("01", groups) is None
    assert _canonical("7", groups) is None


def test_a_high_bound_that_is_no_whole_number_of_codes_is_a_range():
    """Mutant D3 (the sequence rule without `len(hi) % len(lo) == 0`): a sequence's high bound
    is codes as wide as its low bound; "(00-100)" cannot be split into two-digit codes, so it
    is a zero-padded range: "050" and "99" are in it as given, "101" is not."""
    (groups,) = form_groups("(00-100)")
    assert _canonical("050", groups) == "050"
    assert _canonical("99", groups) == "99"
    assert _canonical("101", groups) is None


def test_in_sequence_directly():
    """_in_sequence's own rules (see _canonical): the low bound alone; codes as wide as it,
    each 1 to the high bound's largest, none twice, at most as many as the high bound has."""
    lo, hi = "00", "0102030405"
    assert _in_sequence("00", lo, hi)
    assert _in_sequence("05", lo, hi) and _in_sequence("0504030201", lo, hi)
    assert not _in_sequence("0505", lo, hi)                   # twice
    assert not _in_sequence("0006", lo, hi) and not _in_sequence("06", lo, hi)
    assert not _in_sequence("010203040501", lo, hi)           # six codes
    assert not _in_sequence("010", lo, hi)                    # not whole codes
    assert not _in_sequence("", lo, hi)                       # (no codes is no sequence)
    assert _in_sequence("0301", "00", "0403")                 # top: the largest code, 04
    assert not _in_sequence("0402", "00", "0301")             # top 03


# == emulator/io/network.py: the address a name was given =========================================
def test_an_ipv6_literal_is_answered_and_shown_without_its_brackets():
    """Mutant N1 (answered_address returning an IP literal as dialled, brackets and all): an
    IP literal is "answered" by itself, shown as the address (display_address's docstring: an
    IP literal itself; name_key: an IPv6 literal without its brackets) -- "[2001:db8::1]" is
    2001:db8::1, as the trace's "shown" of a refused open of it must be."""
    router = Router()
    assert router.answered_address("[2001:db8::1]") == "2001:db8::1"
    assert router.display_address("[2001:db8::1]") == "2001:db8::1"
    assert router.answered_address("10.0.0.1") == "10.0.0.1"


def test_answered_address_is_none_for_a_name_nothing_resolved_and_the_entry_once_given():
    """answered_address: None for a name nothing resolved (display_address makes one up then),
    the --dns entry once there is one, by the name's key (case, the root's dot)."""
    router = Router()
    assert router.answered_address("x.example") is None
    assert router.display_address("x.example") == made_up_address("x.example")
    router.dns["x.example"] = "192.0.2.7"
    assert router.answered_address("X.Example.") == "192.0.2.7"
    assert router.display_address("x.example") == "192.0.2.7"


# == emulator/sockets/ssl_socket.py: _after ========================================================
def test_after_runs_the_link_only_once_the_wait_is_done():
    """_after(wait, link): the coroutine `link` runs after the awaitable, its result returned."""
    order: list[str] = []

    async def wait():
        await asyncio.sleep(0)
        order.append("wait")

    async def link():
        order.append("link")
        return "transport"

    assert asyncio.run(_after(wait(), link())) == "transport"
    assert order == ["wait", "link"]


@pytest.mark.parametrize("failure", [asyncio.CancelledError, OSError])
def test_after_a_failed_wait_closes_the_link_never_run_and_passes_the_failure_on(failure):
    """Mutants X2 (_after not closing `link`) and X6 (_after not re-raising): when the wait
    fails or is cancelled (the replay over, the open cancelled), the connect never runs, its
    coroutine is closed (no "never awaited" warning, its docstring) and the wait's failure is
    what the open sees."""
    ran: list[str] = []

    async def wait():
        raise failure()

    async def link():
        ran.append("link")

    coro = link()

    async def main():
        with pytest.raises(failure):
            await _after(wait(), coro)

    asyncio.run(main())
    assert ran == []
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED


def test_after_a_failed_wait_with_a_future_for_link_passes_the_failure_on():
    """A `link` that is no coroutine (no close()): the wait's failure still passes on."""
    class Refused(Exception):
        pass

    async def wait():
        raise Refused()

    async def main():
        link = asyncio.get_running_loop().create_future()
        with pytest.raises(Refused):     # (not the wait_for's TimeoutError: an OSError too)
            await asyncio.wait_for(_after(wait(), link), 5)
        link.cancel()

    asyncio.run(main())


# == emulator/tools/trace.py: refusals and failed lookups in the replay ===========================
OK = b"\r\nOK\r\n"
ATTACH = 'AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1'


def test_unresolved_names_and_connects_completing_at_a_prompt_replay_in_order(open_modem, emulator, tmp_path, capsys):
    """(Written for mutant T7, _refusal without "dns"; it does not kill it: the replayed round
    trips already put the failed lookups in order -- the count is a tie-break.)  Sockets 1-8 opened with round trips of 3.2 s down to 0.4 s (8 completes first); the odd
    ones to names nothing resolves (offline, no route: 565 a round trip later), the even ones
    to an echo server; socket 0 connected at once; the host at socket 0's prompt while 4 s
    pass: after SEND OK, +QIOPEN 8,0; 7,565; 6,0; ... 1,565 -- and the replay in that order."""
    path = tmp_path / "prompt_dns.trace"
    with TcpServer(behave=rs.echo_close) as server:
        host, advance, _ = rs.traced_modem(open_modem, emulator, path)
        assert host.at(ATTACH) == OK
        for cid in range(1, 9):
            if cid % 2 == 0:
                emulator.router.add_map(f"tcp{cid}.example", 7000 + cid, "127.0.0.1", server.port)
            rs.ctl(emulator, "net", latency_ms=1800 - 200 * cid)
            rs.tcp_open(host, cid, 0, name=f"tcp{cid}.example", port=7000 + cid)
        emulator.router.add_map("tcp.example", 7000, "127.0.0.1", server.port)
        rs.ctl(emulator, "net", latency_ms=0)
        rs.tcp_open(host, 0, 1)
        assert host.read_until(b"+QIOPEN: 0,0\r\n") == b"\r\n+QIOPEN: 0,0\r\n"
        host.write("AT+QISEND=0,5\r\n")
        assert host.read_until(b"> ") == b"\r\n> "
        advance(4.0)
        host.write(b"hello")
        assert host.read_until(b"hello\r\n") == (
            b"\r\nSEND OK\r\n"
            + b"".join(b"\r\n+QIOPEN: %d,%d\r\n" % (cid, 565 if cid % 2 else 0) for cid in range(8, 0, -1))
            + b'\r\n+QIURC: "recv",0,5\r\nhello\r\n')
        assert host.at("AT+QICLOSE=0;" + ";".join(f"+QICLOSE={cid}" for cid in range(2, 9, 2))) == OK
        rs.finish(emulator)
    rs.replays(capsys, path)


def test_replay_faults_give_each_recorded_refusal_its_moment_once_and_no_other_open_one():
    """Mutants T10 (failure_wait not clearing what it gave) and T22 (take_open not clearing
    the last refusal's moment): NetFaults.failure_wait is what the fault take_open *just*
    gave waits for -- a recorded refusal's moment, asked once per open (each ask makes a
    wait: ReplayPeer.moment_reached spawns a task); an open with no recorded failure, or one
    after a refusal whose wait nobody asked for, waits for nothing."""
    asked: list[tuple] = []

    def moment_reached(moment):
        asked.append(moment)
        return ("wait", moment)

    faults = _ReplayFaults(None, frozenset({2, 4}), frozenset({3}), None,
                           {2: (10, 20), 3: (30, 40), 4: (50, 60)}, moment_reached)
    assert faults.take_open("a.example") is None and faults.failure_wait() is None
    assert faults.take_open("b.example") == "refuse"
    assert faults.failure_wait() == ("wait", (10, 20))
    assert faults.failure_wait() is None                   # (once)
    assert faults.take_open("c.example") == "dns"          # (its wait never asked for)
    assert faults.take_open("d.example") == "refuse"
    assert faults.failure_wait() == ("wait", (50, 60))
    assert faults.take_open("e.example") is None
    assert faults.failure_wait() is None
    assert asked == [(10, 20), (50, 60)]


def test_replay_faults_after_an_unasked_refusal_the_next_open_waits_for_nothing():
    """Mutant T22: a refused open whose wait nobody asked for (the socket gone first), then an
    open the recording connected: no wait of the refusal's comes with it."""
    faults = _ReplayFaults(None, frozenset({1}), frozenset(), None, {1: (5, 6)}, lambda m: ("wait", m))
    assert faults.take_open("a.example") == "refuse"
    assert faults.take_open("a.example") is None
    assert faults.failure_wait() is None


def test_refusal_is_a_failed_opens_connect_or_dns_answer_only():
    """_refusal: an open_result with a non-zero code whose failure is "connect" or "dns"."""
    assert _refusal({"kind": "open_result", "code": 566, "failure": "connect"})
    assert _refusal({"kind": "open_result", "code": 565, "failure": "dns"})
    assert not _refusal({"kind": "open_result", "code": 0})
    assert not _refusal({"kind": "open_result", "code": 0, "failure": "connect"})
    assert not _refusal({"kind": "open_result", "code": 569, "failure": "timeout"})
    assert not _refusal({"kind": "handshake", "code": 566, "failure": "connect"})


# -- ReplayPeer's waits for the modem's sends (_expect, _given_up, close) ------------------------
class _Sock:
    def __init__(self, sid: int) -> None:
        self.socket = sid


class _FakeClock:
    """time.monotonic for trace.py: `rate` fake seconds per real second, from 1000."""

    def __init__(self, rate: float) -> None:
        import time as real
        self._real, self._t0, self.rate = real, real.monotonic(), rate

    def monotonic(self) -> float:
        return 1000.0 + (self._real.monotonic() - self._t0) * self.rate


def test_a_wait_for_a_send_lasts_until_ten_seconds_past_its_scheduled_time(monkeypatch):
    """Mutants T15 (_expect not passing the step's recorded time to _given_up) and T17
    (_given_up ignoring the schedule): a stand-in's wait for the modem's send ends 10 s after
    the later of its start and the step's recorded time's place in the replay (the anchor:
    recorded 0.0 is replay 1000; the step was recorded at 30.0) -- not 10 s after it began.
    The send comes at 1025 (fake clock: 20 fake seconds a real one): taken."""
    clock = _FakeClock(20.0)
    monkeypatch.setattr(trace_mod, "time", clock)
    peer = ReplayPeer([], host_sent=lambda: 0)
    peer.anchor = (0.0, 1000.0)

    async def send_at(t: float):
        while clock.monotonic() < t:
            await asyncio.sleep(0.01)
        return b"late"

    async def main():
        return await peer._expect(_Sock(1), ("expect", b"late", 30.0), send_at(1025.0))

    assert asyncio.run(main()) == b"late"
    assert peer._expecting == {}


def test_a_wait_for_a_send_gives_up_ten_seconds_past_its_schedule_and_stops_its_read(monkeypatch):
    """_expect: TimeoutError once the replay is 10 s past the step's place (1030 + 10) and the
    read it waited on is cancelled (mutant T26: left pending), the wait no longer listed."""
    clock = _FakeClock(40.0)
    monkeypatch.setattr(trace_mod, "time", clock)
    peer = ReplayPeer([], host_sent=lambda: 0)
    peer.anchor = (0.0, 1000.0)
    cancelled: list[bool] = []

    async def never():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await peer._expect(_Sock(1), ("expect", b"x", 30.0), never())
        gave_up_at = clock.monotonic()
        await asyncio.sleep(0.05)
        return gave_up_at, list(cancelled)          # (before asyncio.run cancels what is left)

    gave_up_at, cancelled_then = asyncio.run(main())
    assert gave_up_at > 1040.0
    assert cancelled_then == [True]
    assert peer._expecting == {}


def test_close_names_the_sends_still_awaited_and_not_the_ones_that_came():
    """Mutants T13 (close without its 1 s grace), T14 (close naming nothing), T16 (_expect not
    removing a wait that ended) and T23 (the datagram wording swapped): at the replay's end a
    send still awaited is a difference, "socket <id> never sent <bytes>, recorded" (a datagram:
    "never sent the datagram ..."); one that came -- before close, or within its grace -- is not."""
    peer = ReplayPeer([], host_sent=lambda: 0)

    async def main():
        loop = asyncio.get_running_loop()
        came, late = loop.create_future(), loop.create_future()
        waits = [asyncio.ensure_future(peer._expect(_Sock(1), ("expect", b"came", None), came)),
                 asyncio.ensure_future(peer._expect(_Sock(2), ("expect", b"late", None), late)),
                 asyncio.ensure_future(peer._expect(_Sock(3), ("expect", b"never", None), loop.create_future())),
                 asyncio.ensure_future(peer._expect(_Sock(4), ("expect", b"dgram", None), loop.create_future(),
                                                    datagram=True))]
        await asyncio.sleep(0.05)
        came.set_result(b"came")
        await asyncio.sleep(0.3)                     # (_expect sees it within its 0.25 s poll)
        loop.call_later(0.3, late.set_result, b"late")
        await peer.close()
        for w in waits:
            w.cancel()
        await asyncio.gather(*waits, return_exceptions=True)

    asyncio.run(main())
    assert peer.differences == ["socket 3 never sent 'never', recorded",
                                "socket 4 never sent the datagram 'dgram', recorded"], peer.differences


def test_a_moment_wait_is_done_when_reached_and_cancelled_by_close():
    """Mutant T27 (moment_reached's wait not one of the replay's tasks): a refusal's wait for
    its recorded moment is done once the replay is that far, and one still waiting when the
    replay ends is cancelled by close() (spawn's docstring: "cancelled by close")."""
    sent = [0]
    peer = ReplayPeer([], host_sent=lambda: sent[0])

    async def main():
        reached = peer.moment_reached((5,))
        never = peer.moment_reached((1 << 40,))
        await asyncio.sleep(0.05)
        assert not reached.done()
        sent[0] = 5
        await asyncio.wait_for(reached, 2)
        await peer.close()
        await asyncio.sleep(0)
        return never.cancelled()

    assert asyncio.run(main()) is True
