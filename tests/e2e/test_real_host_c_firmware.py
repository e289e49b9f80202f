"""Firmware built for the host: C modem drivers, compiled with the system `cc` at test time,
run against the emulator's CLI pty.

The two programs in tests/e2e/c_hosts/ are written the way embedded-Linux modem drivers are:
- ec2x_host.c: open(O_RDWR|O_NOCTTY|O_NONBLOCK) then O_NONBLOCK cleared, cfmakeraw with
  VMIN=0/VTIME=1, cfsetspeed(B115200), "\\r\\n" line endings, tcflush(TCIFLUSH) before every
  command (stale URCs dropped: it polls AT+QSSLRECV), alarm() timeouts, a "\\r\\n" line
  assembler and a response matcher with URCs in between; AT+QFUPL of the CA with the XOR
  checksum checked in C, fixed-length AT+QSSLSEND with the data in small writes, AT+QSSLRECV
  until +QSSLRECV: 0, transparent mode (CONNECT, stream, 1 s guard, +++, ATO, AT+QISWTMD),
  the port closed and reopened mid-session.
- cr_host.c: the port kept O_NONBLOCK, termios set field by field, everything select()-based
  with deadlines, "\\r" line endings, no flushing; the ML302 path (AT+QSECWRITE of the CA
  with the XOR checksum computed in C, AT+QSECREAD, AT+QSSLCFG, AT+QSSLOPEN, Ctrl+Z sends,
  AT+QSSLRECV, connectmode 1) and an EC2x direct-push path whose data arrive as URCs between
  answers, with payloads that begin with LF written after the "> " prompt.

Each program prints "RESULT ok sent=N recv=N sha_sent=H sha_recv=H ..." (or "RESULT fail
why"); the TLS peer is an independent Python ssl (OpenSSL) echo server -- echo_peer() below,
peers.TlsServer with an echo handler -- on 127.0.0.1, the dialled name routed there with --route.  The test
checks the SHA-256 of what the C host sent, what the peer received and what came back.

OS packages needed: a C compiler and libc headers (gcc, libc6-dev), openssl.  A missing
compiler fails the tests (no skip: `make test` must install it).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from emulator.testing.peers import TlsConnection, TlsServer
from tests.e2e.cli_support import cli_factory

SOURCES = Path(__file__).resolve().parent / "c_hosts"
HOSTNAME = "www.iottest.work"          # one of the PKI server certificate's names
WALL = 300                             # a C host's whole run, generous for a loaded machine


# --- the compiled hosts ---------------------------------------------------------------------------

@pytest.fixture(scope="session")
def c_hosts(tmp_path_factory) -> dict[str, str]:
    """Both programs, compiled once per session (per xdist worker) into a temp dir."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.fail("no C compiler (`cc`): these tests build C host programs "
                    "(apt-get install gcc libc6-dev; `make test` installs them)")
    out = tmp_path_factory.mktemp("c_hosts")
    built = {}
    for name in ("ec2x_host", "cr_host"):
        exe = out / name
        result = subprocess.run([cc, "-std=c99", "-O2", "-Wall", "-Wextra", "-o", str(exe),
                                 str(SOURCES / f"{name}.c")], capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, f"{name}.c does not compile:\n{result.stderr}"
        assert "warning" not in result.stderr, result.stderr
        built[name] = str(exe)
    return built


def run_host(exe: str, *args: str, wall: float = WALL) -> tuple[dict[str, str], str, str]:
    """Run a C host to its end: (the RESULT line's key=value pairs, stdout, stderr)."""
    result = subprocess.run([exe, *args], capture_output=True, timeout=wall)
    out = result.stdout.decode(errors="replace")
    err = result.stderr.decode(errors="replace")
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert lines and lines[-1].startswith("RESULT ok") and result.returncode == 0, (
        f"C host exit {result.returncode}\nstdout:\n{out}\nwire (tail):\n{err[-6000:]}")
    pairs = dict(item.split("=", 1) for item in lines[-1].split()[2:])
    return pairs, out, err


# --- the emulator as a user starts it --------------------------------------------------------------

@pytest.fixture
def cli(tmp_path):
    """start(*args) -> Cli: the CLI as a user starts it (tests/e2e/cli_support.Cli)."""
    yield from cli_factory(tmp_path)


# --- the TLS peer: Python's ssl (OpenSSL), nothing of the emulator's -------------------------------

def echo_peer(pki, hold_after: int | None = None, hold: float = 3.0,
              close_after: int | None = None, cert=None) -> TlsServer:
    """A TLS echo server (emulator.testing.peers.TlsServer: Python ssl in threads, each
    connection's bytes kept in conn.received) that sends every chunk back as it comes.
    hold_after=N: once a connection has received more than N bytes, the echo waits `hold`
    seconds first (once) -- a slow server, so that a host that closes its port right after
    writing is gone before the answer comes.  close_after=N: the server closes (close_notify,
    then TCP) once it has echoed N bytes.  cert: a peers.pki CertFiles other than the CA's
    server certificate.  TLS 1.2 up, OpenSSL's DEFAULT suites (Python's own list drops RSA
    key exchange, all the ML302 has)."""
    def handler(conn: TlsConnection) -> None:
        held = False
        while chunk := conn.recv():
            if not held and hold_after is not None and len(conn.received) > hold_after:
                held = True
                time.sleep(hold)
            conn.sendall(chunk)
            if close_after is not None and len(conn.received) >= close_after:
                time.sleep(0.2)
                conn.send_close_notify()
                return
    return TlsServer(cert or pki.server, handler=handler, min_version="TLSv1.2",
                     ciphers="DEFAULT:@SECLEVEL=0")


def wait_ended(peer: TlsServer, count: int, timeout: float = 60) -> None:
    """The first `count` connections are over (the client closed, or the server did)."""
    peer.wait_for(lambda: len(peer.connections) >= count
                  and all(conn.done.is_set() for conn in peer.connections[:count]),
                  timeout, f"{count} connection(s) to end")


def all_received(peer: TlsServer) -> bytes:
    return b"".join(bytes(conn.received) for conn in peer.connections)


def payload_file(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def ca_file(tmp_path: Path, pki) -> str:
    return payload_file(tmp_path, "ca.pem", pki.ca.cert_pem)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_end_to_end(result: dict[str, str], data: bytes, peer_got: bytes) -> None:
    """What the C host sent is `data`; the peer got exactly it; the echo came back whole."""
    assert int(result["sent"]) == len(data) and result["sha_sent"] == sha(data), result
    assert len(peer_got) == len(data) and sha(peer_got) == sha(data), \
        f"peer got {len(peer_got)} bytes, sha {sha(peer_got)}; sent {len(data)}, sha {sha(data)}"
    assert int(result["recv"]) == len(data) and result["sha_recv"] == sha(data), result


# ==================================================================================================
# ec2x_host: "\r\n", VMIN=0/VTIME=1, alarm(), tcflush before each command
# ==================================================================================================

PIECES = (1460, 1, 733, 1459, 64, 1000, 2, 1460, 517)     # ec2x_host.c send_pieces()


def piece_starts(size: int) -> list[int]:
    starts, off, i = [], 0, 0
    while off < size:
        starts.append(off)
        off += PIECES[i % len(PIECES)]
        i += 1
    return starts


@pytest.mark.parametrize("lf_first", [False, True], ids=["binary", "pieces-start-with-lf"])
def test_ec2x_buffer_mode_session_end_to_end(cli, tmp_path, pki, c_hosts, lf_first):
    """CA upload (XOR checksum checked in C), seclevel 1, access mode 0, 40 KiB of binary in
    fixed-length sends of 1..1460 bytes written 61 bytes at a time, AT+QSSLRECV polled to
    +QSSLRECV: 0, AT+QSSLSTATE, AT+QSSLCLOSE: every byte there and back (SHA-256).
    pieces-start-with-lf: every send's first byte is LF (the 1-byte sends are a lone LF),
    written after the driver read "> ": its command line's LF came with the line, so this
    one is data."""
    data = bytearray(os.urandom(40_000))
    if lf_first:
        for start in piece_starts(len(data)):
            data[start] = 0x0A
    data = bytes(data)
    with echo_peer(pki) as peer:
        emu = cli("--route", f"{HOSTNAME}:443=127.0.0.1:{peer.port}")
        result, _, _ = run_host(c_hosts["ec2x_host"], emu.dev, "buffer", HOSTNAME, "443",
                                payload_file(tmp_path, "p.bin", data), ca_file(tmp_path, pki))
        wait_ended(peer, 1)
        assert_end_to_end(result, data, all_received(peer))
        assert not peer.errors, peer.errors
    assert (tmp_path / "state" / "ufs" / "cacert.pem").read_bytes() == pki.ca.cert_pem
    emu.stop()


def test_ec2x_port_closed_in_a_prompt_and_before_reading_the_echo(cli, tmp_path, pki, c_hosts):
    """The driver closes its port in a "> " prompt after 300 of 1000 bytes (a crash, a
    watchdog restart) and reopens it: the half send is abandoned -- not one of those bytes
    reaches the peer -- the socket is still connected, the rest of the payload goes.  Then
    it closes the port again after SEND OK, before reading the echo: the next open reads it
    all with AT+QSSLRECV (its "recv" URC went with the hang-up)."""
    data = os.urandom(24_000)
    with echo_peer(pki) as peer:
        emu = cli("--route", f"{HOSTNAME}:443=127.0.0.1:{peer.port}")
        result, out, _ = run_host(c_hosts["ec2x_host"], emu.dev, "reopen", HOSTNAME, "443",
                                  payload_file(tmp_path, "p.bin", data), ca_file(tmp_path, pki))
        wait_ended(peer, 1)
        got = all_received(peer)
        assert b"ABANDONED-" not in got
        assert_end_to_end(result, data, got)
        assert out.count("STEP port reopened") == 2, out
    emu.stop()


def test_ec2x_transparent_mode_escape_ato_qiswtmd_and_reopen_online(cli, tmp_path, pki, c_hosts):
    """Access mode 2: CONNECT, 96 KiB of binary (holding "+++", "AT\\r\\n", Ctrl+Z, ESC)
    streamed with at most 32 KiB in flight while the echo is read; 1.3 s guard, "+++", OK;
    AT+QSSLSTATE shows access mode 2; ATO, more data, "+++"; AT+QISWTMD to buffer mode
    (fixed-length sends, AT+QSSLRECV) and back to 2 (CONNECT); data, then the port closed
    while online and reopened: ATO gives CONNECT and the echo that waited; "+++";
    AT+QSSLCLOSE.  The peer got every byte in order, and every byte came back."""
    core = os.urandom(96 * 1024)
    data = core[:5000] + b"+++AT\r\n\x1a\x1b\x00+++" + core[5000:]
    n = len(data)
    # the last piece (the one written before the port closes while online) is echoed 3 s
    # late: the echo must wait in the socket for ATO, not race the close (what the modem had
    # already written to a host that then closed without reading it is gone, by design)
    with echo_peer(pki, hold_after=n // 2 + n // 4 + n // 8) as peer:
        emu = cli("--route", f"{HOSTNAME}:443=127.0.0.1:{peer.port}")
        result, out, _ = run_host(c_hosts["ec2x_host"], emu.dev, "transparent", HOSTNAME, "443",
                                  payload_file(tmp_path, "p.bin", data), ca_file(tmp_path, pki))
        wait_ended(peer, 1)
        assert_end_to_end(result, data, all_received(peer))
        assert out.count("STEP escaped") == 3, out
        assert not peer.errors, peer.errors
    emu.stop()


# ==================================================================================================
# cr_host: "\r", O_NONBLOCK + select(), termios by hand, no flushing
# ==================================================================================================

def text_payload(size: int) -> bytes:
    """Printable lines (a Ctrl+Z-ended send cannot carry 0x1A or 0x1B)."""
    rows, n = [], 0
    while n < size:
        row = f"{n:08d} " + os.urandom(24).hex() + "\r\n"
        rows.append(row)
        n += len(row)
    return "".join(rows).encode()[:size]


def test_ml302_secwrite_ssl_session_and_transparent(cli, tmp_path, pki, c_hosts):
    """The ML302 path of a C driver: AT+QSECWRITE=0 of the CA in 100-byte writes and Ctrl+Z,
    its +QSECWRITE checksum equal to the manual's XOR computed in C (four lower-case hex
    digits), AT+QSECREAD agreeing; seclevel 1 on the slot's CA; 12 KB of text in Ctrl+Z
    sends; "recv" URCs and AT+QSSLRECV (the header shows the modem's DNS answer, not the
    loopback route) until a bare OK; close (OK, then 0,CLOSE OK); connectmode 1: CONNECT,
    300 KiB of binary streamed with 64 KiB in flight, +++, close.  Every byte both ways."""
    text = text_payload(12_000)
    binary = os.urandom(300 * 1024)
    with echo_peer(pki) as peer:
        emu = cli("--profile", "ml302", "--route", f"{HOSTNAME}:443=127.0.0.1:{peer.port}",
                  "--dns", f"{HOSTNAME}=106.12.79.254")
        result, out, _ = run_host(c_hosts["cr_host"], emu.dev, "ml302", HOSTNAME, "443",
                                  payload_file(tmp_path, "t.txt", text),
                                  payload_file(tmp_path, "b.bin", binary), ca_file(tmp_path, pki))
        wait_ended(peer, 2)
        first, second = (bytes(conn.received) for conn in peer.connections[:2])
        assert first == text and sha(second) == sha(binary) and len(second) == len(binary)
        assert_end_to_end(result, text + binary, first + second)
        assert result["peer"] == "106.12.79.254:443", result
        assert "STEP escaped" in out
        assert not peer.errors, peer.errors
    emu.stop()


def test_ec2x_cr_only_direct_push_with_payloads_starting_with_lf(cli, tmp_path, pki, c_hosts):
    """A CR-only select() driver on the EC2x, access mode 1: 30 fixed-length sends of 1000
    bytes, each beginning with LF (and CR LF right after), written after the driver has read
    "> " -- data, not the end of the command line; the echo arrives as
    +QSSLURC: "recv",3,<len> pushes between the answers, which the driver parses with their
    raw bytes; AT+QSSLRECV on the push socket is ERROR; AT+QSSLSTATE shows mode 1."""
    pieces = [b"\n\r\n" + os.urandom(997) for _ in range(30)]
    data = b"".join(pieces)
    with echo_peer(pki) as peer:
        emu = cli("--route", f"{HOSTNAME}:443=127.0.0.1:{peer.port}")
        result, _, _ = run_host(c_hosts["cr_host"], emu.dev, "push", HOSTNAME, "443",
                                payload_file(tmp_path, "b.bin", data))
        wait_ended(peer, 1)
        assert_end_to_end(result, data, all_received(peer))
        assert int(result["pushes"]) >= 1
        assert not peer.errors, peer.errors
    emu.stop()


# ==================================================================================================
# the driver's error paths: a refused open, the peer closing
# ==================================================================================================

def test_ec2x_open_refused_by_an_untrusted_server(cli, tmp_path, pki, c_hosts):
    """The peer's certificate comes from another CA: the C driver's open ends in
    +QSSLOPEN: 4,566 (TLS failures are 566 on the EC2x), AT+QIGETERROR says 566, the
    id is free (AT+QSSLCLOSE harmless), and the peer never gets a byte of application data."""
    with echo_peer(pki, cert=pki.wrong_server) as peer:
        emu = cli("--route", f"{HOSTNAME}:443=127.0.0.1:{peer.port}")
        result, _, _ = run_host(c_hosts["ec2x_host"], emu.dev, "badca", HOSTNAME, "443",
                                payload_file(tmp_path, "p.bin", b"never sent"),
                                ca_file(tmp_path, pki))
        assert result["open_err"] == "566" and result["qigeterror"] == "566", result
        assert result["sent"] == "0" and all_received(peer) == b""
    emu.stop()


@pytest.mark.parametrize("scenario", ["peerclose", "peerclose_online"])
def test_ec2x_peer_closes_after_its_echo(cli, tmp_path, pki, c_hosts, scenario):
    """The server echoes 30 KB and closes (close_notify, FIN).  Buffer mode: the driver --
    which flushes stale URCs, so it may never see "closed" -- still reads every byte with
    AT+QSSLRECV, AT+QSSLSTATE then shows state 4, AT+QSSLSEND is ERROR, AT+QSSLCLOSE OK.
    Access mode 2: every echoed byte, then NO CARRIER in the stream; state 4, mode 2;
    AT+QSSLCLOSE OK."""
    data = os.urandom(30_000)
    with echo_peer(pki, close_after=len(data)) as peer:
        emu = cli("--route", f"{HOSTNAME}:443=127.0.0.1:{peer.port}")
        result, _, _ = run_host(c_hosts["ec2x_host"], emu.dev, scenario, HOSTNAME, "443",
                                payload_file(tmp_path, "p.bin", data), ca_file(tmp_path, pki))
        wait_ended(peer, 1)
        assert_end_to_end(result, data, all_received(peer))
        assert not peer.errors, peer.errors
    emu.stop()
