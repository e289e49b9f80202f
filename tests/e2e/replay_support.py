"""What the replay tests share: run `replay_main` on a trace, read and rewrite its records,
wait for a trace being written (emulator/tools/trace.py)."""
from __future__ import annotations

import json
import socket
import ssl
import threading
import time

from emulator.tools.trace import replay_main


class ReplayDiffers(AssertionError):
    """An unchanged trace's (or log's) replay reported a difference (its output is the
    message; a failure in the recording is a plain AssertionError)."""


def replay(capsys, path, *args: str) -> tuple[int, str]:
    """(exit code, what it printed) of `modem-emulator replay PATH ARGS`; never a traceback."""
    capsys.readouterr()
    code = replay_main([str(path), *args])
    cap = capsys.readouterr()
    assert "Traceback" not in cap.out + cap.err, cap.out + cap.err
    return code, cap.out + cap.err


def replays(capsys, path, *args: str) -> None:
    """The trace replays with no difference (else ReplayDiffers with what replay printed)."""
    code, out = replay(capsys, path, *args)
    if code != 0:
        raise ReplayDiffers(out)
    assert "no difference" in out, out


def records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def save(tmp_path, name: str, recs: list[dict]):
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return p


def changed(tmp_path, path, pick, change, name: str = "changed.trace"):
    """The trace at `path` with change(record) applied to the first record pick() accepts."""
    recs = records(path)
    i = next(k for k, r in enumerate(recs) if pick(r))
    recs[i] = change(dict(recs[i]))
    return save(tmp_path, name, recs)


def flush(emulator) -> None:
    """The answer the host read and its record are one loop callback: one round trip and the
    trace is complete."""
    emulator.run(lambda: None)


def wait_records(path, kind: str, count: int, timeout: float = 10) -> None:
    """Until the trace being written has `count` records of `kind` (whole lines only)."""
    deadline = time.monotonic() + timeout
    while sum(1 for line in path.read_text().split("\n")[:-1] if json.loads(line)["kind"] == kind) < count:
        assert time.monotonic() < deadline, f"{count} {kind!r} records never came"
        time.sleep(0.005)


def qisend(host, cid: int, data: bytes, length: int | None = None) -> None:
    """AT+QISEND of `data` (length: what the command line says -- dataformat hex: half the digits)."""
    host.write(f"AT+QISEND={cid},{len(data) if length is None else length}\r")
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(data)
    assert host.read_until(b"SEND OK\r\n") == b"\r\nSEND OK\r\n"


def tls_echo(ctx: ssl.SSLContext, raw) -> None:
    """Server side of one accepted connection: OpenSSL's handshake, then an echo until the
    client closes (errors end it quietly); the socket closed either way."""
    conn = raw
    try:
        conn = ctx.wrap_socket(raw, server_side=True)
        while data := conn.recv(4096):
            conn.sendall(data)
    except (OSError, ssl.SSLError):
        pass
    finally:
        conn.close()


# -- what the replay review rounds' sessions share (test_review_replay_changes_3 .. _6) --------
def echo_close(conn) -> None:
    """TcpServer behaviour: echo until the modem's FIN, then close."""
    while data := conn.sock.recv(4096):
        conn.sock.sendall(data)
    conn.close()


class Refusing:
    """A bound socket that refuses connects (never listening)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()


def traced_modem(open_modem, emulator, path, profile: str = "ec2x"):
    """A modem on manual time tracing to `path`, its host ending lines with CR LF:
    (host, advance, port)."""
    host, port = open_modem(profile, trace=str(path), manual_time=True)
    host.line_end = b"\r\n"
    return host, emulator.advancer(port, host), port


def ctl(emulator, op: str, **kw) -> None:
    assert emulator.control(op, **kw)["ok"]


def advance_until(host, advance, pattern, step: float = 0.25, tries: int = 120) -> bytes:
    """Move the modem's clock by `step` until `pattern` came; what came up to it."""
    for _ in range(tries):
        advance(step)
        try:
            return host.read_until(pattern, timeout=0.3)
        except AssertionError:
            continue
    return host.read_until(pattern)


def tcp_open(host, cid: int, mode: int = 1, name: str = "tcp.example", port: int = 7000, kind: str = "TCP") -> None:
    assert host.at(f'AT+QIOPEN=1,{cid},"{kind}","{name}",{port},0,{mode}') == b"\r\nOK\r\n"


def echo_on(host, cid: int, data: bytes) -> None:
    """An AT+QISEND of `data` on a push-mode socket whose server echoes: the echo's URC."""
    qisend(host, cid, data)
    assert host.read_until(data + b"\r\n") == b'\r\n+QIURC: "recv",%d,%d\r\n%s\r\n' % (cid, len(data), data)


def finish(emulator) -> None:
    """The trace written out, the recording emulator stopped."""
    flush(emulator)
    emulator.stop()


class Collect:
    """TcpServer behaviour: keep what came, answer nothing, close at the modem's FIN."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.cond = threading.Condition()

    def __call__(self, conn) -> None:
        while chunk := conn.sock.recv(4096):
            with self.cond:
                self.data += chunk
                self.cond.notify_all()
        conn.close()

    def wait_for(self, data: bytes, timeout: float = 30) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: data in self.data, timeout), bytes(self.data)
