"""Property-based fuzzing (hypothesis, derandomized) of the two field tools that take
structured input from users, to find the whole class of "a field of the wrong type crashes
it" bugs at once (test_adversarial_field_tools_3.py / test_review_today_5.py fixed three of
them one by one: "t": 1e300, an open record's host a number, a DNS table keyed by an IP).

What is fuzzed
- `modem-emulator replay` (emulator/tools/trace.py replay_main) on traces mutated from a
  small REAL one recorded in this module (an EC2x modem with a trace: ATE0, PDP up, an SSL
  open to a routed TLS echo server, a send, a recv, a close): records dropped, duplicated,
  swapped; any field's value replaced by one of another JSON type (null, bool, int, a huge or
  negative int, a float, NaN / Infinity literals, a string, an empty, very long or
  non-latin-1 string, a list, an object), "kind" changed to another known kind, blank and
  garbage lines inserted (invalid UTF-8 and a 5000-digit integer literal among them), the last
  line cut short.  Also host AT logs (`>> AT` / `<< OK` lines, terminal captures) of random
  content.  Several replays run at once (threads, each with its own stdout/stderr).
  Property: replay_main([path, "--max-gap", "0.1"]) returns 0, 1 or 2 within a bounded time,
  raises nothing, writes no traceback, the emulator logs no record at ERROR or with exc_info;
  exit 2 is one line on stderr "modem-emulator replay: ..." naming the file.
- the control API (emulator/tools/control.py): every op of its table with argument dicts of
  known and unknown keys and random JSON values, through a real --control socket
  (ControlServer on a BackgroundEmulator) and in-process (BackgroundEmulator.control).
  Property: exactly one JSON answer line per request line, {"ok": true, ...} or
  {"ok": false, "error": <non-empty, not "internal error">}, no ERROR / exc_info log record,
  afterwards the modem still answers AT with OK and `state` still works.

Each distinct bug found (seven, all in replay, all fixed: "Was a bug, fixed") has a small
deterministic test below; the properties cover their input classes too.
"""
from __future__ import annotations

import contextlib
import gc
import io
import json
import logging
import re
import socket
import sys
import threading
import time
import traceback

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator.io.app import BackgroundEmulator
from emulator.testing.host import Host
from emulator.tools.control import OPS, ControlServer
from emulator.tools.trace import read_trace, replay_main

HOST = "echo.example"
FUZZ = settings(derandomize=True, deadline=None, database=None, print_blob=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large, HealthCheck.filter_too_much])
RUN_LIMIT = 60.0            # seconds one replay may take before it counts as a hang


# == shared helpers: capturing what replays and the emulator say ==============================
class _PerThread(io.TextIOBase):
    """sys.stdout / sys.stderr while replays run in threads: each thread's own buffer."""

    def __init__(self, fallback) -> None:
        self.fallback = fallback
        self.buffers: dict[int, io.StringIO] = {}

    def write(self, text: str) -> int:
        buf = self.buffers.get(threading.get_ident())
        (buf if buf is not None else self.fallback).write(text)
        return len(text)

    def flush(self) -> None:
        pass


class _BadRecords(logging.Handler):
    """Every log record at ERROR or above, or carrying a traceback (exc_info)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.bad: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.levelno >= logging.ERROR:
            self.bad.append(f"{record.levelname} {record.name}: {record.getMessage()[:300]}")


@contextlib.contextmanager
def _watching_logs():
    """_BadRecords on the root logger (at INFO) for the block's duration."""
    handler = _BadRecords()
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old)


@pytest.fixture
def bad_logs():
    with _watching_logs() as handler:
        yield handler


def _replay_many(paths: list[str]) -> list[dict]:
    """replay_main on each path at once (threads): [{rc, out, err, took}] in order; rc is
    "hang" past RUN_LIMIT and "raised" (err: the traceback) when replay_main raised."""
    results = [dict(rc="hang", out="", err="", took=RUN_LIMIT) for _ in paths]
    out, err = _PerThread(sys.stdout), _PerThread(sys.stderr)

    def one(i: int, path: str) -> None:
        me = threading.get_ident()
        out.buffers[me], err.buffers[me] = io.StringIO(), io.StringIO()
        t0 = time.monotonic()
        try:
            rc = replay_main([path, "--max-gap", "0.1"])
        except BaseException:                 # noqa: BLE001 - that is the finding
            rc = "raised"
            err.buffers[me].write(traceback.format_exc())
        results[i] = dict(rc=rc, out=out.buffers[me].getvalue(), err=err.buffers[me].getvalue(),
                          took=time.monotonic() - t0)

    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        threads = [threading.Thread(target=one, args=(i, p), daemon=True) for i, p in enumerate(paths)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + RUN_LIMIT
        for t in threads:
            t.join(max(0.1, deadline - time.monotonic()))
    finally:
        sys.stdout, sys.stderr = saved
    gc.collect()                              # ("Task exception was never retrieved" comes at GC)
    return results


def _check_replay(path: str, result: dict, unnamed_ok: bool = False) -> None:
    rc, err = result["rc"], result["err"]
    assert rc in (0, 1, 2), (path, rc, err[-2000:])
    assert "Traceback" not in err + result["out"], (path, err[-2000:])
    if rc == 2:
        last = err.rstrip("\n").split("\n")[-1]
        assert last.startswith("modem-emulator replay: "), (path, err)
        if not unnamed_ok:
            assert path in last, ("exit 2 without naming the file", path, err)


# == a small real trace ========================================================================
@pytest.fixture(scope="module")
def real_trace(tmp_path_factory) -> list[dict]:
    """The records of a real EC2x session: an SSL open to a TLS echo server, a send, a recv, a
    close (then the host closes the port)."""
    from emulator.testing.peers import TlsServer
    from emulator.testing.peers.pki import default_pki
    d = tmp_path_factory.mktemp("fuzz-trace")
    path = d / "real.trace"
    with BackgroundEmulator(offline=True) as emu, TlsServer(default_pki().server, mode="echo") as server:
        emu.router.add_map(HOST, 443, "127.0.0.1", server.address[1])
        port = emu.add_modem("ec2x", state_dir=d / "state", trace=str(path))
        emu.run(port.port.look_for_host)
        host = Host(port.path)
        try:
            assert host.at("ATE0").endswith(b"OK\r\n")
            assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
            assert host.at(f'AT+QSSLOPEN=1,1,1,"{HOST}",443,0') == b"\r\nOK\r\n"
            host.seen(b"+QSSLOPEN: 1,0\r\n", timeout=5)
            assert host.send_data(1, b"hello") == b"\r\nSEND OK\r\n"
            host.seen(b'+QSSLURC: "recv",1\r\n', timeout=5)
            assert host.at("AT+QSSLRECV=1,1500") == b"\r\n+QSSLRECV: 5\r\nhello\r\n\r\nOK\r\n"
            assert host.at("AT+QSSLCLOSE=1") == b"\r\nOK\r\n"
        finally:
            host.close()
    records = read_trace(path)
    kinds = [r["kind"] for r in records]
    for kind in ("start", "io", "cmd", "open", "handshake", "open_result", "sent", "received", "close"):
        assert kind in kinds, kinds
    assert replay_main([str(path), "--max-gap", "0.1"]) == 0      # the unmutated trace replays
    return records


def _write_trace(path, items: list) -> None:
    """items: record dicts (JSON with NaN/Infinity literals allowed) or raw bytes lines;
    HUGE in a value becomes a 5000-digit integer literal; CUT as the last item: the line before
    it loses its end (no newline)."""
    lines = []
    for item in items:
        if item is CUT:
            if lines:
                lines[-1] = lines[-1][:max(1, len(lines[-1]) // 2)]
            continue
        if isinstance(item, bytes):
            lines.append(item + b"\n")
        else:
            text = json.dumps(item, allow_nan=True).replace(json.dumps(HUGE), "9" * 5000)
            lines.append(text.encode() + b"\n")
    with open(path, "wb") as f:
        f.write(b"".join(lines))


# -- the mutations ---------------------------------------------------------------------------
HUGE = "\x00a 5000-digit integer literal\x00"
CUT = object()
KINDS = ("start", "io", "cmd", "open", "accepted", "handshake", "tls_failure", "open_result", "sent",
         "received", "peer_closed", "close", "hangup", "scenario", "ping", "ntp", "nonsense")
FIELDS = ("t", "modem", "kind", "in", "out", "dir", "data", "line", "answer", "done", "socket", "host",
          "port", "dtls", "service", "type", "version", "cipher", "alpn", "resumed", "failure", "reason",
          "code", "how", "remote", "server", "local_port", "profile", "dns", "material", "times",
          "address", "server_time", "offset")
_scalar = st.one_of(
    st.none(), st.booleans(),
    st.sampled_from([0, 1, -1, 3, 443, 65535, 65536, 70000, 2**31, 2**63, 10**30, -10**30]),
    st.integers(-1000, 1000),
    st.sampled_from([0.5, -0.5, 1e-300, 1e300, 3.0, float("nan"), float("inf"), float("-inf")]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", " ", "x", "ec2x", "ml302", "TLSv1.2", "TCP", "UDP", "rst", "fin", "in", "out",
                     "close_notify", "verify", "dns", "connect", "tcpip", "TCP INCOMING", "UDP SERVICE",
                     "127.0.0.1", "1.2.3.4:²", "AT\r", "\r\nOK\r\n", "a" * 5000, "\u20ac\u4e2d",
                     "\ud800", "../../etc/passwd", HUGE]),
    st.text(max_size=12),
)
VALUES = st.one_of(_scalar, st.lists(_scalar, max_size=3),
                   st.dictionaries(st.text(max_size=6), _scalar, max_size=3),
                   st.just({"files": {"a.bin": 3}, "slots": {"1": [2, 5]}}),
                   st.just({"name.example": "1.2.3.4"}))
GARBAGE = st.one_of(st.sampled_from([b"", b"   ", b"\t", b"{", b"}", b"[1, 2]", b"null", b"42", b'"x"',
                                     b"\xff\xfe garbage", b"{\"t\": 0}", b"[" * 5000,
                                     b'{"t": 0, "modem": 0, "kind": "io", "dir": "in", "data": "AT\\r"}']),
                    st.binary(max_size=20))
MUTATION = st.one_of(
    st.tuples(st.just("drop"), st.integers(0, 10**6)),
    st.tuples(st.just("dup"), st.integers(0, 10**6)),
    st.tuples(st.just("swap"), st.integers(0, 10**6), st.integers(0, 10**6)),
    st.tuples(st.just("field"), st.integers(0, 10**6), st.sampled_from(FIELDS), VALUES),
    st.tuples(st.just("field"), st.integers(0, 10**6), st.sampled_from(FIELDS), VALUES),   # (twice as likely)
    st.tuples(st.just("kind"), st.integers(0, 10**6), st.sampled_from(KINDS)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), GARBAGE),
    st.tuples(st.just("cut"),),
)
TRACE_MUTATIONS = st.lists(MUTATION, min_size=1, max_size=4)


def _mutate(records: list[dict], mutations) -> list:
    items: list = [dict(r) for r in records]
    cut = False
    for m in mutations:
        if m[0] == "cut":
            cut = True
            continue
        n = len(items)
        if m[0] == "insert":
            items.insert(m[1] % (n + 1), m[2])
            continue
        if not n:
            continue
        i = m[1] % n
        if m[0] == "drop":
            del items[i]
        elif m[0] == "dup":
            items.insert(i, items[i] if isinstance(items[i], bytes) else dict(items[i]))
        elif m[0] == "swap":
            j = m[2] % n
            items[i], items[j] = items[j], items[i]
        elif isinstance(items[i], dict):
            if m[0] == "field":
                items[i][m[2]] = m[3]
            else:
                items[i]["kind"] = m[2]
    return items + ([CUT] if cut else [])


def _has(value, pred) -> bool:
    """pred(x) for value or anything inside it."""
    if pred(value):
        return True
    if isinstance(value, dict):
        return any(_has(k, pred) or _has(v, pred) for k, v in value.items())
    if isinstance(value, list):
        return any(_has(v, pred) for v in value)
    return False


# == 1. replay of mutated real traces ==========================================================
BATCH = 20


@settings(FUZZ, max_examples=2)
@given(batch=st.lists(TRACE_MUTATIONS, min_size=BATCH, max_size=BATCH))
def test_fuzz_replay_of_mutated_real_traces(real_trace, tmp_path, bad_logs, batch):
    paths, runs = [], []
    for k, mutations in enumerate(batch):
        items = _mutate(real_trace, mutations)
        path = str(tmp_path / f"m{len(paths)}-{k}.trace")
        _write_trace(path, items)
        paths.append(path)
        runs.append(items)
    bad_logs.bad.clear()
    results = _replay_many(paths)
    for path, items, result in zip(paths, runs, results):
        _check_replay(path, result)
    assert not bad_logs.bad, bad_logs.bad[:5]


# -- host AT logs of random content ------------------------------------------------------------
_AT = st.sampled_from(["AT", "ATE0", "ATE1", "ATI", "AT+CSQ", "AT+CGMR", "AT+CCLK?", "AT+CPIN?", "AT+QSSLSTATE",
                       'AT+QSSLOPEN=1,1,1,"nowhere.example",443,0', "AT+QSSLSEND=1,5", "AT+QSSLRECV=1,10",
                       'AT+QFUPL="UFS:f.txt",3', 'AT+QIOPEN=1,0,"TCP","1.2.3.4",80,0,0', "AT+QICLOSE=0",
                       "AT+CFUN?", "AT+NOPE", "AT+CSQ=?", "at+csq", "AT&V", "AT+QSSLCFG=\"sslversion\",1,4"])
_LINE_TEXT = st.text(st.characters(min_codepoint=1, max_codepoint=0x2FF, blacklist_characters="\r\n"),
                     max_size=30)
_ANSWER = st.one_of(st.sampled_from(["OK", "ERROR", "+CME ERROR: 50", ">", "CONNECT", "SEND OK", "NO CARRIER",
                                     "+CSQ: 99,99", "RDY", ""]), _LINE_TEXT)
# (what the host sends starts with AT: a line the modem never answers costs its 10 s wait each;
# random text still comes as answers and as junk lines)
_STEP = st.tuples(st.one_of(_AT, _AT.map(lambda a: a + ";"), st.tuples(_AT, _LINE_TEXT).map("".join)),
                  st.lists(_ANSWER, max_size=3))


def _at_log(steps, arrows: bool, junk: list[str]) -> str:
    lines = []
    for sent, answers in steps:
        lines.append((">> " if arrows else "") + sent)
        lines.extend(("<< " if arrows else "") + a for a in answers)
    for k, text in enumerate(junk):
        lines.insert(k * 3 % (len(lines) + 1), text)
    return "\r\n".join(lines) + "\n"


@settings(FUZZ, max_examples=2)
@given(batch=st.lists(st.tuples(st.lists(_STEP, min_size=0, max_size=2), st.booleans(),
                                st.lists(_LINE_TEXT, max_size=2)), min_size=12, max_size=12))
def test_fuzz_replay_of_random_host_at_logs(tmp_path, bad_logs, batch):
    paths = []
    for k, (steps, arrows, junk) in enumerate(batch):
        path = tmp_path / f"log{k}.txt"
        path.write_bytes(_at_log(steps, arrows, junk).encode("utf-8", "surrogatepass"))
        paths.append(str(path))
    bad_logs.bad.clear()
    for path, result in zip(paths, _replay_many(paths)):
        # (an AT log's exit 2 is "no commands found": one line, naming no line: nothing to name)
        _check_replay(path, result, unnamed_ok=not open(path, "rb").read().lstrip().startswith(b"{"))
    assert not bad_logs.bad, bad_logs.bad[:5]


# == 2. the control API ========================================================================
KNOWN_ARGS = {
    "state": {},
    "drop": {"socket": st.integers(-1, 12), "how": st.sampled_from(["close", "rst", "blackhole", "RST", ""])},
    "pdp_deact": {"cid": st.integers(-1, 17)},
    "dns_fail": {"count": st.integers(-1, 3)},
    "connect_refuse": {"count": st.integers(-1, 3)},
    "handshake_stall": {"count": st.integers(-1, 3)},
    "send_fail": {"socket": st.integers(-1, 12), "count": st.integers(-1, 3)},
    "dtr": {"level": st.integers(-1, 2)},
    "urc": {"text": st.one_of(st.sampled_from(["+QIND: X", "", "a\rb", "\u20ac", "\ud800", "x" * 3000]),
                              _LINE_TEXT)},
    "reboot": {"ms": st.integers(-1, 700_000)},
    "slow": {"command": st.sampled_from(["+CSQ", "AT+CSQ", "+QSSLOPEN", "AT", "", "+NOPE", " at+cgmr ",
                                         "ATE0", "+CSQ=1", "\u20ac"]), "ms": st.integers(-1, 700_000)},
    "net": {"latency_ms": st.floats(-1, 700_000), "kbps": st.floats(-1, 1e7), "loss": st.floats(-0.5, 1.5),
            "socket": st.integers(-1, 12), "seed": st.integers(-1, 2**64)},
    "uart_noise": {"on": st.booleans(), "seed": st.integers(-1, 2**64)},
    "register": {"stat": st.integers(-1, 6)},
}
_JSON = st.recursive(_scalar.filter(lambda v: v != HUGE),
                     lambda inner: st.one_of(st.lists(inner, max_size=3),
                                             st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                     max_leaves=6)


@st.composite
def _request(draw, ops=tuple(sorted(OPS)) + ("nope", "", "STATE")):
    """(op, modem, kwargs): an op of the table (or not), some of its known arguments with
    plausible or random values, sometimes an unknown one."""
    op = draw(st.sampled_from(ops))
    kw = {}
    for key, plausible in KNOWN_ARGS.get(op, {}).items():
        choice = draw(st.integers(0, 3))
        if choice == 1:
            kw[key] = draw(plausible)
        elif choice == 2:
            kw[key] = draw(_JSON)
    if draw(st.integers(0, 4)) == 0:
        kw[draw(st.sampled_from(["extra", "Socket", "", "op ", "how", "ms", "\u20ac"]))] = draw(_JSON)
    modem = draw(st.one_of(st.just(0), st.just(0), st.just(0), _JSON))
    return op, modem, kw


def test_the_fuzzed_ops_are_control_pys_table():
    assert set(OPS) == set(KNOWN_ARGS), "control.py's table changed: update KNOWN_ARGS"


@pytest.fixture(scope="module")
def ctl(tmp_path_factory):
    """(emu, port, host, control socket path): an EC2x on manual time, PDP up, an SSL socket 1
    open to a TLS echo server (ops on a socket have one to act on, until one drops it)."""
    from emulator.testing.peers import TlsServer
    from emulator.testing.peers.pki import default_pki
    d = tmp_path_factory.mktemp("fuzz-ctl")
    path = d / "c.sock"
    with BackgroundEmulator(offline=True) as emu, TlsServer(default_pki().server, mode="echo") as server:
        emu.router.add_map(HOST, 443, "127.0.0.1", server.address[1])
        port = emu.add_modem("ec2x", state_dir=d / "state", manual_time=True)
        emu.run(port.port.look_for_host)
        server_ctl = ControlServer(emu.emulator, path)
        emu.call(server_ctl.start())
        host = Host(port.path)
        try:
            assert host.at('ATE0;+QICSGP=1,1,"UNINET","","",1;+QIACT=1').endswith(b"OK\r\n")
            assert host.at(f'AT+QSSLOPEN=1,1,1,"{HOST}",443,0') == b"\r\nOK\r\n"
            host.seen(b"+QSSLOPEN: 1,0\r\n", timeout=5)
            yield emu, port, host, path
        finally:
            host.close()
            emu.call(server_ctl.close())


def _settle(emu, port, host) -> None:
    """Undo what lasts (noise, DTR low, slow answers, a reboot under way) and check the modem
    answers AT with OK and `state` works."""
    for op, kw in (("uart_noise", {"on": False}), ("dtr", {"level": 1}), ("register", {"stat": 1})):
        assert emu.control(op, **kw) == {"ok": True}, op
    for command in ("+CSQ", "+QSSLOPEN", "E0", "+CGMR"):
        emu.control("slow", command=command, ms=0)
    emu.advance(port, 700)                    # a reboot's start-up, a pending answer: done
    host.quiet_for(0.05)
    got = host.at("AT", timeout=5)
    assert got.endswith(b"OK\r\n"), got
    state = emu.control("state")
    assert state["ok"] is True and state["profile"] == "ec2x", state


def _answer_ok(answer, request) -> None:
    assert isinstance(answer, dict) and isinstance(answer.get("ok"), bool), (request, answer)
    if not answer["ok"]:
        error = answer.get("error")
        assert isinstance(error, str) and error.strip() and "internal error" not in error, (request, answer)


@settings(FUZZ, max_examples=60)
@given(requests=st.lists(_request(), min_size=1, max_size=6))
def test_fuzz_control_socket_requests(ctl, bad_logs, requests):
    emu, port, host, path = ctl
    bad_logs.bad.clear()
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(path))
    s.settimeout(10)
    try:
        lines = []
        for op, modem, kw in requests:
            request = dict(kw, op=op, modem=modem) if modem != 0 or op == "state" else dict(kw, op=op)
            lines.append(json.dumps(request, allow_nan=True).encode("utf-8", "surrogatepass") + b"\n")
        s.sendall(b"".join(lines))            # pipelined: one answer line each, in order
        data = b""
        deadline = time.monotonic() + 10
        while data.count(b"\n") < len(lines) and time.monotonic() < deadline:
            chunk = s.recv(1 << 20)
            assert chunk, ("the control socket closed", requests, data)
            data += chunk
        answers = data.split(b"\n")[:-1]
        assert len(answers) == len(lines) and data.endswith(b"\n"), (requests, data[-500:])
        for line, answer in zip(lines, answers):
            _answer_ok(json.loads(answer), line)
        s.sendall(b'{"op": "state"}\n')       # the connection is still usable
        tail = b""
        while not tail.endswith(b"\n"):
            chunk = s.recv(1 << 20)
            assert chunk
            tail += chunk
        assert json.loads(tail)["ok"] is True
        s.settimeout(0.05)
        with pytest.raises(socket.timeout):   # and nothing more came: one answer per request
            s.recv(1)
    finally:
        s.close()
    _settle(emu, port, host)
    assert not bad_logs.bad, (requests, bad_logs.bad[:5])


@settings(FUZZ, max_examples=60)
@given(requests=st.lists(_request(), min_size=1, max_size=6))
def test_fuzz_control_in_process(ctl, bad_logs, requests):
    emu, port, host, path = ctl
    bad_logs.bad.clear()
    for op, modem, kw in requests:
        kw = {k: v for k, v in kw.items() if k not in ("op", "modem")}   # (Python's own call rules)
        answer = emu.control(op, modem, **kw)
        _answer_ok(answer, (op, modem, kw))
        json.dumps(answer)                     # an answer the socket can send
    _settle(emu, port, host)
    assert not bad_logs.bad, (requests, bad_logs.bad[:5])


# == the bugs found: one deterministic test each ===============================================
START = {"t": 0, "modem": 0, "kind": "start", "profile": "ec2x", "in": 0, "out": 0}


def _ssl_session(**changes) -> list[dict]:
    """A hand-written trace (echo on, as a modem starts): the PDP context up, AT+QSSLOPEN to
    a.example:443 answered OK then +QSSLOPEN: 1,0; changes: {kind: {field: value}} applied to
    the first record of that kind (the open is line 6 of the file, the handshake line 9)."""
    records, counts = [dict(START)], {"in": 0, "out": 0}

    def add(kind, **fields):
        if kind == "io":
            counts[fields["dir"]] += len(fields["data"])
        records.append({"t": round(0.01 * len(records), 2), "modem": 0, "kind": kind, **fields, **counts})

    for line, events in (('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1', []),
                         ('AT+QSSLOPEN=1,1,1,"a.example",443,0',
                          [("open", {"socket": 1, "host": "a.example", "port": 443, "dtls": False})])):
        add("io", dir="in", data=line + "\r")
        for kind, fields in events:
            add(kind, **fields)
        add("io", dir="out", data=line + "\r\r\nOK\r\n")
        add("cmd", line=line, answer="\r\nOK\r\n", done=True)
    add("handshake", socket=1, version="TLSv1.2", cipher="TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", alpn=None,
        resumed=False)
    add("open_result", socket=1, code=0, reason="", failure=None)
    add("io", dir="out", data="\r\n+QSSLOPEN: 1,0\r\n")
    for kind, fields in changes.items():
        next(r for r in records if r["kind"] == kind).update(fields)
    return records


def _replay_one(tmp_path, items: list) -> tuple[dict, str, list[str]]:
    """(result, path, bad log records) of one replay of `items` (see _write_trace)."""
    path = str(tmp_path / "bug.trace")
    _write_trace(path, items)
    with _watching_logs() as handler:
        result, = _replay_many([path])
    return result, path, handler.bad


def test_the_hand_written_session_replays_with_no_difference(tmp_path):
    result, path, bad = _replay_one(tmp_path, _ssl_session())
    assert result["rc"] == 0 and "no difference" in result["out"], result
    assert not bad


# Was a bug, fixed: an "open" record's port outside 0-65535 passes _record_problem
# (emulator/tools/trace.py:391-393: it checks the port is an int, not its range), so
# replay_records calls emu.router.add_map(host, 70000, ...) (trace.py:1217), whose
# ValueError('route a.example:70000: bad port (0-65535)') is caught nowhere: replay_main raises
# (a traceback, exit 1) instead of exit 2 naming the line
@pytest.mark.parametrize("port", [70000, -1])
def test_bug_replay_of_an_open_to_a_port_outside_0_65535_is_a_traceback(tmp_path, port):
    result, path, bad = _replay_one(tmp_path, _ssl_session(open={"port": port}))
    assert result["rc"] == 2, result
    assert re.match(re.escape(f"modem-emulator replay: {path}:6: not a trace record"), result["err"]), result


# Was a bug, fixed: a "handshake" record's version/cipher of another type than a string (5, [1])
# passes _record_problem (emulator/tools/trace.py:376-416 never looks at them); scripts_of puts
# them in the stand-in's header, ReplaySession._head_read (trace.py:682) hands them to
# HandshakeComplete, and the replaying modem's SslSocket._established joins them as text
# (emulator/sockets/ssl_socket.py:486): TypeError 'sequence item 0: expected str instance, int
# found', logged at ERROR with its traceback ('SSL socket 1: unexpected TypeError'), the open
# answered 566 -- exit 1 instead of 2 naming the line
@pytest.mark.parametrize("field, value", [("version", 5), ("cipher", [1])])
def test_bug_replay_of_a_handshake_whose_version_or_cipher_is_no_string_crashes_the_modem(tmp_path, field, value):
    result, path, bad = _replay_one(tmp_path, _ssl_session(handshake={field: value}))
    line = 9
    assert not bad, bad
    assert result["rc"] == 2 and f"{path}:{line}: not a trace record" in result["err"], result


# Was a bug, fixed: a "tls_failure" / "open_result" record's failure kind that is a list or an
# object passes _record_problem (emulator/tools/trace.py:376-416); scripts_of makes it the
# stand-in's header {"fail": [...]}, ReplaySession._head_read (trace.py:686) raises it as
# TlsFailure(kind=[...]) in the replaying modem, and SslService.code looks the kind up in its
# error table (emulator/sockets/service.py:72, self.errors.get(kind, ...)): TypeError unhashable
# type 'list', logged at ERROR with its traceback, and the replay waits out its 10 s patience --
# exit 1, not 2 naming the line
@pytest.mark.parametrize("kind", ["tls_failure", "open_result"])
def test_bug_replay_of_a_failure_kind_that_is_a_list_crashes_the_modem(tmp_path, kind):
    if kind == "tls_failure":
        items = _ssl_session(handshake={"kind": "tls_failure", "failure": ["verify"], "reason": "x"},
                             open_result={"code": 1, "failure": ["verify"]})
    else:
        items = _ssl_session(handshake={"kind": "close"}, open_result={"code": 1, "failure": {"verify": 1}})
    result, path, bad = _replay_one(tmp_path, items)
    line = 9 if kind == "tls_failure" else 10
    assert not bad, bad
    assert result["rc"] == 2 and f"{path}:{line}: not a trace record" in result["err"], result


# Was a bug, fixed: replay_main's exit 2 for a record that scripts_of cannot read does not name
# the file: scripts_of (emulator/tools/trace.py:566-632) reads fields with r[...] and uses
# "socket" as a dict key, and replay_main (trace.py:1435, 1447-1448) prints the bare exception
# -- "modem-emulator replay: 'how'" (a peer_closed record without "how"), "... unhashable type:
# 'list'" (a list as a socket id), "... invalid literal for int() with base 10: '\u00b2'" (an
# accepted record's remote '1.2.3.4:\u00b2') -- where README/docs promise one line naming the
# file and line
@pytest.mark.parametrize("changes", [
    pytest.param({"handshake": {"kind": "peer_closed"}}, id="peer_closed-without-how"),
    pytest.param({"open": {"socket": [1]}}, id="socket-a-list"),
    pytest.param({"handshake": {"kind": "accepted", "remote": "1.2.3.4:\u00b2"}}, id="remote-port-superscript"),
])
def test_bug_replay_of_a_record_scripts_of_cannot_read_is_exit_2_not_naming_the_file(tmp_path, changes):
    result, path, bad = _replay_one(tmp_path, _ssl_session(**changes))
    assert result["rc"] == 2, result
    assert path in result["err"], result


# Was a bug, fixed: a record holding an integer literal of more than 4300 digits: json.loads
# raises a plain ValueError ('Exceeds the limit (4300 digits) for integer string conversion'),
# not the JSONDecodeError read_trace catches (emulator/tools/trace.py:277), so the message
# reaches replay_main without the file and line (exit 2, 'modem-emulator replay: Exceeds the
# limit ...'); a last line cut short inside such a number is not left out as an interrupted
# recording either
def test_bug_replay_of_a_record_with_a_5000_digit_number_is_exit_2_not_naming_the_line(tmp_path):
    result, path, bad = _replay_one(tmp_path, _ssl_session(start={"in": HUGE}))
    assert result["rc"] == 2, result
    assert f"{path}:1: " in result["err"], result


# Was a bug, fixed: a trace with a byte that is not UTF-8 (a damaged disk block, a binary file
# given by mistake): read_trace opens it as UTF-8 text (emulator/tools/trace.py:272) and the
# UnicodeDecodeError raised while iterating lines reaches replay_main as a ValueError: exit 2
# with "modem-emulator replay: 'utf-8' codec can't decode byte 0xff in position ..." -- neither
# the file nor the line named
def test_bug_replay_of_a_trace_with_a_byte_that_is_no_utf8_is_exit_2_not_naming_the_line(tmp_path):
    items = _ssl_session()
    items.insert(2, b'{"t": 0.01, "modem": 0, "kind": "scenario", "note": "\xff"}')
    result, path, bad = _replay_one(tmp_path, items)
    assert result["rc"] == 2, result
    assert f"{path}:3: " in result["err"], result


# Was a bug, fixed: a record whose bytes field is null ("data": null in an io/sent/received
# record, "line" or "answer": null in a cmd record) passes _record_problem: its loop over
# _BYTES_FIELDS skips a None value (emulator/tools/trace.py:407-410, 'if value is None:
# continue') and _REQUIRED checks only that the key is there; then _b(None) raises
# AttributeError ('NoneType' object has no attribute 'encode') in replay_records (trace.py:1257
# ser.write(_b(r["data"])), trace.py:1198 the expected output) or in scripts_of (trace.py:622
# "sent", r.get("line", "").upper() at trace.py:590), which replay_main does not catch: a
# traceback, exit 1, instead of exit 2 naming the line
@pytest.mark.parametrize("changes", [
    pytest.param({"io": {"data": None}}, id="io-data-null"),
    pytest.param({"cmd": {"line": None}}, id="cmd-line-null"),
    pytest.param({"handshake": {"kind": "sent", "data": None}}, id="sent-data-null"),
])
def test_bug_replay_of_a_record_whose_bytes_are_null_is_a_traceback(tmp_path, changes):
    result, path, bad = _replay_one(tmp_path, _ssl_session(**changes))
    assert result["rc"] == 2, result
    assert re.match(re.escape(f"modem-emulator replay: {path}:") + r"\d+: not a trace record", result["err"]), result
