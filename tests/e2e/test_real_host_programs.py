"""Real host programs nobody here wrote, pointed at the CLI's pty as users do.

Every other end-to-end test talks to the pty through pyserial (emulator.testing.host) or
through Python re-implementations of other people's drivers.  Here the host is a program
installed on the machine: pppd's `chat` (writes one byte at a time, reads with alarm()),
`picocom` with a piped stdin, pyserial's `miniterm` in a terminal, `socat` (a scripted
terminal with `crnl`, a pty-to-pty relay, a file pushed through transparent mode), and the
shell itself (`stty`, `printf > dev`, `cat dev`).  The emulator is started as a user starts
it: `python -m emulator --offline --route ... --state-dir ... --link ...` in a subprocess,
its log in a file that must hold no traceback.  TLS peers are OpenSSL (Python's ssl in
threads, or `openssl s_server`), all on 127.0.0.1.

OS packages needed: ppp (/usr/sbin/chat), picocom, socat, coreutils (stty, timeout),
openssl.  A missing program fails the test with its package name (no skip: the Makefile
installs them).
"""
from __future__ import annotations

import hashlib
import os
import re
import select
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from emulator.testing.host import Host
from emulator.testing.peers import OpenSslServer, TlsServer
from tests.e2e.cli_support import ROOT, cli_factory

HOSTNAME = "www.iottest.work"          # one of the PKI server certificate's names
PACKAGES = {"chat": "ppp", "picocom": "picocom", "socat": "socat", "stty": "coreutils",
            "timeout": "coreutils", "openssl": "openssl", "bash": "bash"}


def tool(name: str) -> str:
    """The real program's path; missing: a failure naming the package (never a skip)."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if path is None:
        pytest.fail(f"`{name}` is not installed: this test drives the real program "
                    f"(apt-get install {PACKAGES.get(name, name)}; `make` installs it)")
    return path


# --- the emulator as a user starts it ---------------------------------------------------------

@pytest.fixture
def cli(tmp_path):
    """start(*args) -> Cli: the CLI as a user starts it (tests/e2e/cli_support.Cli)."""
    yield from cli_factory(tmp_path)


def route(server) -> str:
    return f"{HOSTNAME}:443=127.0.0.1:{server.port}"


# --- chat ----------------------------------------------------------------------------------------

def chat_script(pairs, timeout: int = 30, aborts=("ERROR",)) -> str:
    """A chat script: ABORT strings, TIMEOUT, then expect-send pairs ('' expects nothing;
    a send ending in \\c gets no CR)."""
    lines = [f"ABORT '{a}'" for a in aborts] + [f"TIMEOUT {timeout}"]
    for expect, send in pairs:
        assert "'" not in expect + send
        lines.append(f"'{expect}' '{send}'")
    return "\n".join(lines) + "\n"


def run_chat(dev: str, script: str, tmp_path: Path, name: str = "s.chat", fds: str | None = None,
             wall: float = 180) -> subprocess.CompletedProcess:
    """`chat -v -s -f script < dev > dev` (or on the shell's fds, e.g. '<&3 >&3')."""
    path = tmp_path / name
    path.write_text(script)
    redirect = fds or f"< {shlex.quote(dev)} > {shlex.quote(dev)}"
    return subprocess.run([tool("bash"), "-c", f"exec {tool('chat')} -v -s -f {path} {redirect}"],
                          capture_output=True, timeout=wall)


def chat_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, (f"chat exit status {result.returncode}; its log:\n"
                                    f"{result.stderr.decode(errors='replace')[-4000:]}")


def upload_pairs(name: str, data: bytes) -> list[tuple[str, str]]:
    """AT+QFUPL of an ASCII file through chat: its script tokens hold at most ~1 KiB, so the
    file goes in pieces (each written byte by byte, as chat writes)."""
    text = data.decode("ascii")
    pieces = [text[i:i + 500] for i in range(0, len(text), 500)]
    pairs = [("OK", f'AT+QFUPL="{name}",{len(data)},30'), ("CONNECT", "\\c")]
    pairs += [("", piece.replace("\\", "\\\\").replace("\n", "\\n") + "\\c") for piece in pieces]
    pairs += [(f"+QFUPL: {len(data)},", "\\c")]
    return pairs


def ssl_session_pairs(pki, payload: str = "Test data from SSL", upload: bool = True) -> list[tuple[str, str]]:
    """The EC2x note's section 3, CA uploaded first, as a chat script.  upload False: the CA
    is on the module already (provisioned), for tests about something else -- chat types
    10 ms a character, ~13 s for the CA."""
    return ([("", "ATE0"), ("OK", 'AT+QICSGP=1,1,"UNINET","","",1'), ("OK", "AT+QIACT=1")]
            + (upload_pairs("UFS:ca.pem", pki.ca.cert_pem) if upload else [])
            + [("OK", 'AT+QSSLCFG="seclevel",1,1'),
               ("OK", 'AT+QSSLCFG="cacert",1,"UFS:ca.pem"'),
               ("OK", f'AT+QSSLOPEN=1,1,4,"{HOSTNAME}",443,0'),
               ("+QSSLOPEN: 4,0", f"AT+QSSLSEND=4,{len(payload)}"),
               ("> ", payload + "\\c"),
               ("SEND OK", "\\c"),
               ('+QSSLURC: "recv",4', "AT+QSSLRECV=4,1500"),
               (f"+QSSLRECV: {len(payload)}", "\\c"),
               (payload, "\\c"),
               ("OK", "AT+QSSLCLOSE=4"),
               ("OK", "\\c")])


def provision_ca(tmp_path: Path, pki) -> None:
    """UFS:ca.pem on the module before it starts (its state directory), as a module
    provisioned earlier holds it."""
    ufs = tmp_path / "state" / "ufs"
    ufs.mkdir(parents=True, exist_ok=True)
    (ufs / "ca.pem").write_bytes(pki.ca.cert_pem)


# --- a host holding the port in the test process -------------------------------------------------

def raw_host(dev: str) -> Host:
    subprocess.run([tool("stty"), "-F", dev, "raw", "-echo"], check=True, timeout=30)
    return Host(dev)


# ==================================================================================================
# chat (ppp)
# ==================================================================================================

@pytest.mark.parametrize("termios", ["raw -echo", "sane raw -echo -icanon"])
def test_chat_drives_the_notes_ssl_session_byte_for_byte(cli, tmp_path, pki, termios):
    """chat (one byte a write) runs the whole EC2x note section 3 -- CA upload, seclevel 1,
    open, fixed-length send at the '> ' prompt, recv URC, read, close -- and exits 0; the
    server gets exactly the 18 bytes and the read shows them."""
    with TlsServer(pki.server, mode="echo") as server:
        upload = termios == "raw -echo"         # (the other one: the CA is there already)
        if not upload:
            provision_ca(tmp_path, pki)
        emu = cli("--route", route(server))
        subprocess.run(f"{tool('stty')} -F {emu.dev} {termios}", shell=True, check=True, timeout=30)
        result = run_chat(emu.dev, chat_script(ssl_session_pairs(pki, upload=upload)), tmp_path)
        chat_ok(result)
        assert server.wait_received(18, timeout=30) == b"Test data from SSL"
        log = result.stderr.decode(errors="replace")
        # what chat saw of the read: the header, CR LF, the data, then CR LF CR LF OK
        assert "expect (+QSSLRECV: 18)\n^M\n^M\n+QSSLRECV: 18\n -- got it" in log, log[-3000:]
        assert "expect (Test data from SSL)\n^M\nTest data from SSL\n -- got it" in log, log[-3000:]
        assert "expect (OK)\n^M\n^M\nOK\n -- got it\n\nsend (AT+QSSLCLOSE=4^M)" in log, log[-3000:]
        assert (tmp_path / "state" / "ufs" / "ca.pem").read_bytes() == pki.ca.cert_pem
    emu.stop()


def test_chat_fails_against_an_untrusted_server_with_the_abort_code(cli, tmp_path, pki):
    """openssl s_server with a certificate from another CA: the open reports 566, which
    chat's second ABORT string catches (exit status 5); a script that only waits for success
    times out (exit status 3).  No byte of the payload ever reaches the server."""
    tool("openssl")
    server = OpenSslServer(["-cert", str(pki.wrong_server.chain_path),
                            "-key", str(pki.wrong_server.key_path)])
    try:
        provision_ca(tmp_path, pki)
        emu = cli("--route", route(server))
        subprocess.run([tool("stty"), "-F", emu.dev, "raw", "-echo"], check=True, timeout=30)
        pairs = ssl_session_pairs(pki, upload=False)
        result = run_chat(emu.dev, chat_script(pairs, aborts=("ERROR", "+QSSLOPEN: 4,566")),
                          tmp_path, "abort.chat")
        assert result.returncode == 5, result.stderr.decode(errors="replace")[-3000:]
        waits = ([("", "ATE0"), ("OK", "AT+QSSLCLOSE=4"), ("OK", 'AT+QSSLCFG="seclevel",1,1'),
                  ("OK", 'AT+QSSLCFG="cacert",1,"UFS:ca.pem"'),
                  ("OK", f'AT+QSSLOPEN=1,1,4,"{HOSTNAME}",443,0'), ("+QSSLOPEN: 4,0", "\\c")])
        result = run_chat(emu.dev, chat_script(waits, timeout=8), tmp_path, "timeout.chat")
        assert result.returncode == 3, result.stderr.decode(errors="replace")[-3000:]
        assert "+QSSLOPEN: 4,566" in result.stderr.decode(errors="replace")
        host = raw_host(emu.dev)
        assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 566,socket connection failed\r\n\r\nOK\r\n"
        host.close()
        assert b"Test data from SSL" not in server.stdout
    finally:
        server.stop()
    emu.stop()


def test_chat_on_a_fresh_usb_like_tty_with_echo_and_icrnl(cli, tmp_path, pki):
    """The kernel's defaults of a fresh USB serial tty (`stty sane`: ICANON, ECHO, ICRNL,
    ONLCR), no `stty raw`: the host's own tty echoes every answer back into the modem.  chat's
    line-based script still works (ATE0 first, as users write it), and once ATE0 stopped the
    loop a raw host meets a quiet modem answering its own commands only."""
    with TlsServer(pki.server, mode="echo") as server:
        emu = cli("--route", route(server))
        subprocess.run([tool("stty"), "-F", emu.dev, "sane"], check=True, timeout=30)
        pairs = [("", "AT"), ("OK", "ATE0"), ("OK", "AT+QIACT=1"), ("OK", 'AT+QSSLCFG="seclevel",2,0'),
                 ("OK", f'AT+QSSLOPEN=1,2,3,"{HOSTNAME}",443,0'), ("+QSSLOPEN: 3,0", "AT+QSSLSTATE=3"),
                 ('"SSLClient"', "\\c"), ("OK", "AT+QSSLCLOSE=3"), ("OK", "\\c")]
        chat_ok(run_chat(emu.dev, chat_script(pairs), tmp_path))
        server.wait_handshake(timeout=30)
        time.sleep(0.5)
        host = raw_host(emu.dev)
        host.ser.reset_input_buffer()
        assert host.at("AT+CGMM") == b"\r\nEC25\r\n\r\nOK\r\n"
        time.sleep(0.5)
        host._fill()
        assert bytes(host.pending) == b"", "the modem kept talking after the echo loop"
        host.close()
    emu.stop()


# ==================================================================================================
# picocom
# ==================================================================================================

class Typist:
    """A program whose stdin a person types into (picocom, socat -): write a line, read what
    the program prints until some text is there."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.out = bytearray()

    def type(self, text: bytes) -> None:
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def until(self, text: bytes, timeout: float = 30) -> bytes:
        deadline = time.monotonic() + timeout
        while text not in self.out:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{text!r} never printed; output {bytes(self.out)!r}")
            ready, _, _ = select.select([self.proc.stdout], [], [], min(left, 0.2))
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    raise AssertionError(f"program ended before {text!r}; output {bytes(self.out)!r}; "
                                         f"stderr {self.proc.stderr.read()!r}")
                self.out += chunk
        return bytes(self.out)

    def settle(self, seconds: float) -> bytes:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                self.out += chunk
        return bytes(self.out)

    def end(self, timeout: float = 30) -> int:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        rest = self.proc.stdout.read()
        self.out += rest
        return rc


def test_picocom_typed_session_prints_the_module_transcript(cli, pki):
    """picocom with a piped stdin (Enter as LF, --omap lfcr; --imap lfcrlf on the screen),
    typing as a person reads: echo on, a variable-length send ended by Ctrl+Z, the read.  Its
    screen is the module's bytes with each LF shown as CR LF."""
    with TlsServer(pki.server, mode="echo") as server:
        emu = cli("--route", route(server))
        pico = Typist([tool("picocom"), "-q", "-b", "115200", "--omap", "lfcr", "--imap", "lfcrlf",
                       "--exit-after", "3000", emu.dev])
        try:
            steps = [
                (b"ATI\n", b"Revision: EC25EFAR06A06M4G\r\n\r\nOK\r\n"),
                (b"AT+QIACT=1\n", b"AT+QIACT=1\r\r\nOK\r\n"),
                (b'AT+QSSLCFG="seclevel",2,0\n', b'AT+QSSLCFG="seclevel",2,0\r\r\nOK\r\n'),
                (f'AT+QSSLOPEN=1,2,0,"{HOSTNAME}",443,0\n'.encode(), b"\r\n+QSSLOPEN: 0,0\r\n"),
                (b"AT+QSSLSEND=0\n", b"AT+QSSLSEND=0\r\r\n> "),
                (b"hello modem\x1a", b'\r\n+QSSLURC: "recv",0\r\n'),
                (b"AT+QSSLRECV=0,1500\n", b"\r\nOK\r\n"),
            ]
            for typed, shown in steps:
                pico.type(typed)
                pico.until(shown.replace(b"\n", b"\r\n"))
            assert server.wait_received(11, timeout=30) == b"hello modem"
        finally:
            rc = pico.end()
        expected = (b"ATI\r\r\nQuectel\r\nEC25\r\nRevision: EC25EFAR06A06M4G\r\n\r\nOK\r\n"
                    b"AT+QIACT=1\r\r\nOK\r\n"
                    b'AT+QSSLCFG="seclevel",2,0\r\r\nOK\r\n'
                    + f'AT+QSSLOPEN=1,2,0,"{HOSTNAME}",443,0\r\r\nOK\r\n\r\n+QSSLOPEN: 0,0\r\n'.encode()
                    + b"AT+QSSLSEND=0\r\r\n> hello modem\r\nSEND OK\r\n"   # (data echoed, not Ctrl+Z)
                    b'\r\n+QSSLURC: "recv",0\r\n'
                    b"AT+QSSLRECV=0,1500\r\r\n+QSSLRECV: 11\r\nhello modem\r\n\r\nOK\r\n")
        assert bytes(pico.out) == expected.replace(b"\n", b"\r\n"), bytes(pico.out)
        assert rc == 0
    emu.stop()


def test_picocom_exit_after_leaves_command_state_for_the_next_program(cli):
    """A person types half a command, then picocom quits (--exit-after: its close is a
    hang-up, DTR drop on a USB port): the next program's line is not glued to the half line."""
    emu = cli()
    pico = Typist([tool("picocom"), "-q", "-b", "115200", "--exit-after", "1500", emu.dev])
    pico.type(b"AT+CG")
    pico.until(b"AT+CG")
    assert pico.end() == 0
    time.sleep(0.5)
    pico = Typist([tool("picocom"), "-q", "-b", "115200", "--exit-after", "1500", emu.dev])
    pico.type(b"AT\r")
    pico.until(b"OK\r\n")
    assert pico.end() == 0
    assert bytes(pico.out) == b"AT\r\r\nOK\r\n"
    emu.stop()


# ==================================================================================================
# miniterm (pyserial) in a terminal
# ==================================================================================================

def _lines(screen: bytes) -> list[str]:
    return [line for line in re.split(r"[\r\n]+", screen.decode(errors="replace")) if line]


@pytest.mark.parametrize("eol, runs", [("CR", True), ("CRLF", True), ("LF", False)])
def test_miniterm_eol_modes(cli, eol, runs):
    """pyserial's miniterm in a terminal (ptyprocess), a person pressing Enter: with --eol CR
    and CRLF each command is answered once (the LF of CR LF is neither echoed nor a second
    line); with LF nothing runs (S3 is CR), the echo shows the typing, and the next program
    (after miniterm's close) meets command state."""
    import ptyprocess
    emu = cli()
    term = ptyprocess.PtyProcess.spawn(
        [sys.executable, "-m", "serial.tools.miniterm", "--eol", eol, emu.dev, "115200"],
        dimensions=(24, 200), cwd=str(ROOT))
    screen = bytearray()

    def pump(until: bytes | None, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and (until is None or until not in screen):
            ready, _, _ = select.select([term.fd], [], [], 0.05)
            if ready:
                try:
                    screen.extend(term.read(4096))
                except EOFError:
                    return
    try:
        pump(b"Help: Ctrl+T", 30)
        pump(None, 1)                             # (miniterm's console set up: no tty echo)
        start = len(screen)
        term.write(b"AT+CGMM\r")
        pump(b"OK" if runs else None, 30 if runs else 2)
        term.write(b"AT+QIACT?\r")
        pump(None, 2)
        term.write(b"\x1d")                       # Ctrl+]: quit
        pump(b"--- exit ---", 30)
    finally:
        if term.isalive():
            term.terminate(force=True)
    shown = _lines(bytes(screen[start:]).replace(b"--- exit ---", b""))
    if runs:
        assert shown == ["AT+CGMM", "EC25", "OK", "AT+QIACT?", "OK"], bytes(screen[start:])
    else:
        assert shown == ["AT+CGMM", "AT+QIACT?"], bytes(screen[start:])
    time.sleep(0.5)
    host = raw_host(emu.dev)
    assert host.at("AT") == b"AT\r\r\nOK\r\n"
    host.close()
    emu.stop()


# ==================================================================================================
# socat
# ==================================================================================================

def test_socat_crnl_terminal_with_cr_lf_lines_and_ctrl_z_send(cli, pki):
    """`socat - DEV,raw,echo=0,crnl`: a script writes LF lines (socat sends CR LF), reads the
    module's lines with CR LF turned into LF.  Each LF belongs to its line, also the one that
    opens the '> ' prompt (the data then start with what the script typed, not an LF)."""
    with TlsServer(pki.server, mode="echo") as server:
        emu = cli("--route", route(server))
        term = Typist([tool("socat"), "-", f"{emu.dev},raw,echo=0,crnl"])
        try:
            term.type(b"ATE0\n")
            term.until(b"OK\n")
            term.type(b"AT+QIACT=1;+QSSLCFG=\"seclevel\",2,0\n")
            term.until(b"ATE0\nOK\n\nOK\n")
            term.type(f'AT+QSSLOPEN=1,2,5,"{HOSTNAME}",443,0\n'.encode())
            term.until(b"+QSSLOPEN: 5,0\n")
            term.type(b"AT+QSSLSEND=5\n")
            term.until(b"> ")
            term.type(b"line one\x1a")
            term.until(b'+QSSLURC: "recv",5\n')
            assert server.wait_received(8, timeout=30) == b"line one"
            term.type(b"AT+QSSLRECV=5,100\n")
            term.until(b"line one\n\nOK\n")
            term.type(b"AT+QSSLCLOSE=5\n")
            out = term.until(b"line one\n\nOK\n\nOK\n")
        finally:
            term.end()
        # the module's bytes with socat's crnl taking the CRs out; ATE0 echoed itself (echo was
        # on when it came), the data after '> ' are not echoed
        assert out == (b"ATE0\nOK\n\nOK\n\nOK\n\n+QSSLOPEN: 5,0\n\n> \nSEND OK\n\n+QSSLURC: \"recv\",5\n"
                       b"\n+QSSLRECV: 8\nline one\n\nOK\n\nOK\n"), out
    emu.stop()


def test_socat_pty_relay_carries_a_chat_session(cli, tmp_path, pki):
    """A virtual null-modem / serial sniffer: `socat PTY,link=vdev,raw,echo=0 DEV,raw,echo=0`,
    chat on the relay's pty.  socat re-chunks both ways; the session is unchanged and the
    server gets exactly the bytes."""
    with TlsServer(pki.server, mode="echo") as server:
        provision_ca(tmp_path, pki)
        emu = cli("--route", route(server))
        vdev = tmp_path / "vdev"
        relay = subprocess.Popen([tool("socat"), f"PTY,link={vdev},raw,echo=0",
                                  f"{emu.dev},raw,echo=0"], stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 30
            while not vdev.exists():
                assert time.monotonic() < deadline and relay.poll() is None, relay.stderr.read()
                time.sleep(0.05)
            result = run_chat(str(vdev), chat_script(ssl_session_pairs(pki, "relayed through socat", upload=False)),
                              tmp_path)
            chat_ok(result)
            assert server.wait_received(21, timeout=30) == b"relayed through socat"
        finally:
            relay.terminate()
            relay.wait(30)
    emu.stop()


def test_socat_pushes_a_file_through_transparent_mode_then_escape_and_ato(cli, tmp_path, pki):
    """A shell holds the port (exec 3<>DEV): chat opens transparent mode (access mode 2,
    CONNECT), `socat -u FILE FD:3` pushes 300 KiB of binary holding '+++', 'AT\\r', Ctrl+Z,
    ESC and NUL; after a guard time '+++' gives OK, AT+QSSLSTATE shows mode 2, ATO goes
    back and a second file follows; a second escape, then AT+QSSLCLOSE.  The server got both
    files in order, byte for byte (SHA-256)."""
    blob1 = os.urandom(150_000) + b"+++AT\r\n\x1a\x1b\x00+++" + os.urandom(150_000)
    blob2 = b"+++" + os.urandom(70_000) + b"+++"
    (tmp_path / "one.bin").write_bytes(blob1)
    (tmp_path / "two.bin").write_bytes(blob2)
    with TlsServer(pki.server, mode="sink") as server:
        emu = cli("--route", route(server))
        open_s = chat_script([("", "ATE0"), ("OK", "AT+QIACT=1"), ("OK", 'AT+QSSLCFG="seclevel",1,0'),
                              ("OK", f'AT+QSSLOPEN=1,1,2,"{HOSTNAME}",443,2'), ("CONNECT", "\\c")])
        escape = chat_script([("", "\\d\\d+++\\c"), ("OK", "AT+QSSLSTATE=2"),
                              ('"SSLClient","' + HOSTNAME + '",443', "\\c"), ("OK", "ATO"),
                              ("CONNECT", "\\c")])
        close = chat_script([("", "\\d\\d+++\\c"), ("OK", "AT+QSSLCLOSE=2"), ("OK", "\\c")])
        for name, text in (("open.chat", open_s), ("escape.chat", escape), ("close.chat", close)):
            (tmp_path / name).write_text(text)
        chat, socat, stty = tool("chat"), tool("socat"), tool("stty")
        shell = f"""
            set -e
            exec 3<>{emu.dev}
            {stty} raw -echo <&3
            {chat} -v -s -f {tmp_path}/open.chat <&3 >&3
            {socat} -u FILE:{tmp_path}/one.bin FD:3
            {chat} -v -s -f {tmp_path}/escape.chat <&3 >&3
            {socat} -u FILE:{tmp_path}/two.bin FD:3
            {chat} -v -s -f {tmp_path}/close.chat <&3 >&3
        """
        result = subprocess.run([tool("bash"), "-c", shell], capture_output=True, timeout=240)
        chat_ok(result)
        conn = server.wait_done(timeout=60)
        got = bytes(conn.received)
        assert len(got) == len(blob1) + len(blob2)
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(blob1 + blob2).hexdigest()
        # AT+QSSLSTATE after the first escape: connected (2), access mode 2
        assert re.search(rb',\d+,2,1,2,2,"usbmodem",1\^M', result.stderr), result.stderr[-3000:]
    emu.stop()


# ==================================================================================================
# the shell: stty, printf > dev, cat dev
# ==================================================================================================

def test_shell_cat_reader_and_printf_writers(cli, tmp_path, pki):
    """The classic shell host: `cat DEV > out &` holds the port; each command is its own
    `printf '...\\r' > DEV` (open, write, close).  Since cat holds the port those closes are
    no hang-up: every command runs, even the data written by a separate printf after the
    '> ' prompt, and cat's file is the module's exact transcript."""
    with TlsServer(pki.server, mode="echo") as server:
        emu = cli("--route", route(server))
        out = tmp_path / "cat.out"
        dev = shlex.quote(emu.dev)
        reader = subprocess.Popen([tool("bash"), "-c", f"{tool('stty')} -F {dev} raw -echo; "
                                   f"exec cat {dev} > {out}"])
        try:
            def wait_for(text: bytes, timeout: float = 30) -> None:
                deadline = time.monotonic() + timeout
                while text not in out.read_bytes():
                    assert time.monotonic() < deadline, f"{text!r} not in {out.read_bytes()!r}"
                    time.sleep(0.05)

            def printf(text: str) -> None:
                subprocess.run([tool("bash"), "-c", f"printf '%s' {shlex.quote(text)} > {dev}"],
                               check=True, timeout=30)
            time.sleep(1)                  # (cat has the port, stty done)
            printf("ATE0\r")
            wait_for(b"OK\r\n")
            printf("AT+QIACT=1\r")
            printf('AT+QSSLCFG="seclevel",1,0\r')
            printf(f'AT+QSSLOPEN=1,1,1,"{HOSTNAME}",443,0\r')
            wait_for(b"+QSSLOPEN: 1,0\r\n")
            printf("AT+QSSLSEND=1,5\r")
            wait_for(b"> ")
            printf("ab")
            time.sleep(0.3)
            printf("cde")
            wait_for(b'+QSSLURC: "recv",1\r\n')
            printf("AT+QSSLRECV=1,1500\r")
            wait_for(b"abcde\r\n\r\nOK\r\n")
            printf("AT+QSSLCLOSE=1\r")
            wait_for(b"abcde\r\n\r\nOK\r\n\r\nOK\r\n")
            assert server.wait_received(5, timeout=30) == b"abcde"
        finally:
            reader.terminate()
            reader.wait(30)
        got = out.read_bytes()
        assert got == (b"ATE0\r\r\nOK\r\n\r\nOK\r\n\r\nOK\r\n\r\nOK\r\n\r\n+QSSLOPEN: 1,0\r\n"
                                    b"\r\n> \r\nSEND OK\r\n\r\n+QSSLURC: \"recv\",1\r\n"
                                    b"\r\n+QSSLRECV: 5\r\nabcde\r\n\r\nOK\r\n\r\nOK\r\n"), got
    emu.stop()


def test_shell_printf_alone_then_a_new_program_meets_a_clean_modem(cli):
    """`printf 'AT+CGMM\\r' > DEV` with nobody else holding the port (open, write, close),
    then, a while later, a program opens it: it reads only the answers to its own commands --
    no stale answer, no half line glued to its own (docs: a host that closed before it was
    seen has its bytes dropped; one seen has no answer written after its close)."""
    emu = cli()
    subprocess.run([tool("stty"), "-F", emu.dev, "raw", "-echo"], check=True, timeout=30)
    for text in ("AT+CGMM\r", "ATI\r", "AT+CG"):
        subprocess.run([tool("bash"), "-c", f"printf '%s' {shlex.quote(text)} > {emu.dev}"],
                       check=True, timeout=30)
        time.sleep(0.5)
    host = Host(emu.dev)
    assert host.at("AT+CSQ") == b"AT+CSQ\r\r\n+CSQ: 24,99\r\n\r\nOK\r\n", bytes(host.transcript)
    time.sleep(0.3)
    host._fill()
    assert bytes(host.pending) == b""
    host.close()
    emu.stop()


def test_shell_half_line_of_a_closed_program_is_not_run_for_the_next_one(cli, tmp_path):
    """`printf 'AT+CG' > DEV`, a moment, then the next program's `MM<CR>`: the first one's
    half line went with its close (a hang-up), so `MM<CR>` is not a command.  (With no moment
    between them the two programs are one host to the modem, as on a real module's USB port:
    docs/behaviour.md; the helper that found it saw AT+CGMM run 5 times in 5.)"""
    emu = cli()
    subprocess.run([tool("stty"), "-F", emu.dev, "raw", "-echo"], check=True, timeout=30)
    # The moment is a sleep, as a script's; then, for a loaded machine, also until the emulator
    # has logged that program's going (a 0.2 s moment alone was once too short for its look for
    # a host, every 50 ms, under CPU load).  Each count is taken with nothing else pending: fd 3's
    # close is waited for too.
    closes = r"closed before it was seen|host closed"
    shell = f"""
        count() {{ {tool('grep')} -c -E '{closes}' {emu.log_path}; }}
        more_than() {{
            end=$((SECONDS + 10))
            until [ "$(count)" -gt "$1" ] || [ $SECONDS -ge $end ]; do sleep 0.01; done
        }}
        for i in 1 2 3 4 5; do
            n=$(count)
            printf 'AT+CG' > {emu.dev}
            sleep 0.2
            more_than $n
            exec 3<>{emu.dev}
            printf 'MM\\r' >&3
            {tool('timeout')} 1 cat <&3 || true
            n=$(count)
            exec 3>&-
            more_than $n
            sleep 0.3
        done
    """
    result = subprocess.run([tool("bash"), "-c", shell], capture_output=True, timeout=120)
    # each new program's bytes are `MM<CR>`: outside a command line, echoed, never answered
    assert b"EC25" not in result.stdout and b"OK" not in result.stdout, result.stdout
    emu.stop()


def test_uart_mode_printf_only_host_sends_ssl_data(cli, tmp_path, pki):
    """`--uart` (a HAT on /dev/ttyS0, no hang-up line): a host that writes each piece with
    its own `printf > DEV` -- the command, then the data after the prompt -- gets every byte
    to the modem; the answers written while nobody held the port are lost, never waiting for
    the next program; a later reader sees only its own."""
    with TlsServer(pki.server, mode="echo") as server:
        emu = cli("--uart", "--route", route(server))
        subprocess.run([tool("stty"), "-F", emu.dev, "raw", "-echo"], check=True, timeout=30)
        dev = emu.dev
        steps = ["ATE0\r", "AT+QIACT=1\r", 'AT+QSSLCFG="seclevel",1,0\r',
                 f'AT+QSSLOPEN=1,1,3,"{HOSTNAME}",443,0\r']
        for text in steps:
            subprocess.run([tool("bash"), "-c", f"printf '%s' {shlex.quote(text)} > {dev}"],
                           check=True, timeout=30)
            time.sleep(0.3)
        server.wait_handshake(timeout=30)
        time.sleep(1)
        for text in ("AT+QSSLSEND=3,18\r", "Test data ", "from SSL"):
            subprocess.run([tool("bash"), "-c", f"printf '%s' {shlex.quote(text)} > {dev}"],
                           check=True, timeout=30)
            time.sleep(0.5)
        assert server.wait_received(18, timeout=30) == b"Test data from SSL"
        time.sleep(0.5)
        host = Host(dev)
        assert host.at("AT+QSSLRECV=3,1500") == b"\r\n+QSSLRECV: 18\r\nTest data from SSL\r\n\r\nOK\r\n"
        assert bytes(host.transcript) == b"\r\n+QSSLRECV: 18\r\nTest data from SSL\r\n\r\nOK\r\n"
        assert host.at("AT+QSSLCLOSE=3") == b"\r\nOK\r\n"
        host.close()
    emu.stop()


def test_transparent_session_survives_the_shell_leaving_and_ato_returns(cli, tmp_path, pki):
    """A shell opens transparent mode with chat and exits (its close: a hang-up while
    online); meanwhile the server sends.  The next program's ATO gets CONNECT and then the
    server's bytes, none lost; what it types then reaches the server; +++ and close."""
    arrived = threading.Event()
    later = threading.Event()
    finished = threading.Event()

    def handler(conn):
        while len(conn.received) < 5 and conn.recv():
            pass
        arrived.set()
        later.wait(60)
        conn.sendall(b"while you were away")
        while len(conn.received) < 5 + 4 and conn.recv():
            pass
        finished.wait(60)                     # (open until the host closes)

    with TlsServer(pki.server, handler=handler) as server:
        emu = cli("--route", route(server))
        first = chat_script([("", "ATE0"), ("OK", "AT+QIACT=1"), ("OK", 'AT+QSSLCFG="seclevel",1,0'),
                             ("OK", f'AT+QSSLOPEN=1,1,2,"{HOSTNAME}",443,2'), ("CONNECT", "hello\\c")])
        subprocess.run([tool("stty"), "-F", emu.dev, "raw", "-echo"], check=True, timeout=30)
        chat_ok(run_chat(emu.dev, first, tmp_path, "first.chat"))
        assert arrived.wait(30) and bytes(server.conn.received) == b"hello"
        time.sleep(0.5)                       # the hang-up is seen
        later.set()
        time.sleep(1)                         # the server's bytes wait for ATO
        second = chat_script([("", "ATO"), ("CONNECT", "\\c"), ("while you were away", "more\\c"),
                              ("", "\\d\\d+++\\c"), ("OK", "AT+QSSLCLOSE=2"), ("OK", "\\c")])
        result = run_chat(emu.dev, second, tmp_path, "second.chat")
        chat_ok(result)
        assert server.wait_received(9, timeout=30) == b"hellomore"
        # between CONNECT and the waiting bytes: the CONNECT line's CR LF, nothing else
        assert "expect (while you were away)\n^M\nwhile you were away\n -- got it" in \
            result.stderr.decode(errors="replace"), \
            result.stderr.decode(errors="replace")[-3000:]
        finished.set()
    emu.stop()


def test_chat_ml302_session_against_openssl_s_server(cli, tmp_path, pki):
    """The ML302 profile, both ends real programs: chat sends an HTTP request at the '> '
    prompt, ended with Ctrl+Z (chat's ^Z), to `openssl s_server`; what s_server prints is the
    request byte for byte; its answer (typed on its stdin) comes back through the recv URC
    and AT+QSSLRECV; the close answers OK then `0,CLOSE OK`."""
    tool("openssl")
    server = OpenSslServer(["-cert", str(pki.server.chain_path), "-key", str(pki.server.key_path)])
    try:
        emu = cli("--profile", "ml302", "--route", route(server))
        subprocess.run([tool("stty"), "-F", emu.dev, "raw", "-echo"], check=True, timeout=30)
        script = chat_script([
            ("", "ATE0"), ("OK", 'AT+CGDCONT=1,"IP","CMNET"'), ("OK", "AT+CGACT=1,1"),
            ("OK", 'AT+QSSLCFG="seclevel",0,0'),
            ("OK", f'AT+QSSLOPEN=0,0,"{HOSTNAME}",443,0'), ("+QSSLOPEN: 0,0", "AT+QSSLSEND=0"),
            ("> ", "GET /test.html HTTP/1.1\\r\\nHost: www.iottest.work\\r\\n\\r\\n^Z\\c"),
            ("SEND OK", "\\c"),
            ('+QSSLURC: "recv",1,0', "AT+QSSLRECV=1,0,1460"),
            (",TCP,18^M", "\\c"), ("served by s_server", "\\c"), ("OK", "AT+QSSLCLOSE=0"),
            ("0,CLOSE OK", "\\c")])
        (tmp_path / "ml302.chat").write_text(script)
        chat = subprocess.Popen([tool("bash"), "-c", f"exec {tool('chat')} -v -s -f {tmp_path}/ml302.chat "
                                 f"< {emu.dev} > {emu.dev}"], stderr=subprocess.PIPE)
        request = b"GET /test.html HTTP/1.1\r\nHost: www.iottest.work\r\n\r\n"
        server.wait_for_output(re.escape(request), timeout=60)
        server.write(b"served by s_server")
        try:
            _, err = chat.communicate(timeout=120)
        finally:
            chat.kill()
        assert chat.returncode == 0, err.decode(errors="replace")[-3000:]
        # exactly the request between s_server's handshake report and its end
        assert server.stdout.count(request) == 1 and b"\x1a" not in server.stdout
    finally:
        server.stop()
    emu.stop()
