"""make bench: prints figures, asserts nothing (speed goals live in issues).

1. TLS handshake median: the sans-IO engine vs Python's ssl client, same server.
2. AT-level throughput through the pty: 1 MiB up (AT+QSSLSEND=<id>,1460) and down
   (AT+QSSLRECV=<id>,1500) against a loopback echo server.
3. The transfer checksum (emulator.storage.checksum.xor16) over 1 MiB.
4. Transparent access mode: 64 MiB host -> server through the pty (EC2x access mode 2;
   host, emulator and server in three processes), beside the in-memory ceiling of the same
   engine configuration (the negotiated suite, encrypting the same 64 MiB with no pty and
   no socket) and what a bare pty moves on this machine, measured in the same run.

Peers and the pty host come from emulator.testing (the `test` extra), as the tests' do.
"""
from __future__ import annotations

import os
import socket
import ssl
import statistics
import time

from emulator.io.app import BackgroundEmulator
from emulator.storage.checksum import xor16
from emulator.testing.engine_client import ClientDriver
from emulator.testing.host import Host
from emulator.testing.peers import TlsServer, make_pki
from tls_engine import TlsClientSession, TlsSettings


def handshake_medians(server: TlsServer, rounds: int = 40) -> tuple[float, float]:
    engine, openssl = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        driver = ClientDriver(TlsClientSession(TlsSettings(server_name="localhost")), server.port)
        driver.handshake()
        engine.append(time.perf_counter() - t)
        driver.close()
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        t = time.perf_counter()
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", server.port))):
            openssl.append(time.perf_counter() - t)
    return statistics.median(engine) * 1000, statistics.median(openssl) * 1000


def at_throughput(server: TlsServer, size: int = 1 << 20) -> tuple[float, float]:
    payload = bytes(range(256)) * (size // 256)
    with BackgroundEmulator(routes=[f"bench.example:443=127.0.0.1:{server.port}"]) as emu:
        host = Host(emu.add_modem("ec2x").path)
        host.at("ATE0;+QIACT=1")
        host.at('AT+QSSLOPEN=1,0,0,"bench.example",443')
        host.seen(b"+QSSLOPEN: 0,0")
        # Up: the server echoes, so read back concurrently enough to keep SEND OK coming.
        received = 0
        t = time.perf_counter()
        for i in range(0, len(payload), 1460):
            while host.send_data(0, payload[i:i + 1460]) != b"\r\nSEND OK\r\n":
                received += _drain(host)
        up = time.perf_counter() - t
        t = time.perf_counter()
        while received < len(payload):
            received += _drain(host)
        down = time.perf_counter() - t
        host.at("AT+QSSLCLOSE=0")
        host.close()
    return size / up / 1e6, size / max(down, 1e-9) / 1e6


def _drain(host: Host) -> int:
    answer = host.at("AT+QSSLRECV=0,1500")
    return int(answer.split(b"+QSSLRECV: ")[1].split(b"\r\n")[0])


def transparent_throughput(cert, size: int = 64 << 20) -> tuple[float, str]:
    """MB/s from the host's first byte to the server's last, and the suite negotiated.
    Host, emulator (the CLI) and server (bench/sink.py) are three processes, as in use."""
    import subprocess
    import sys
    import tempfile
    sink = subprocess.Popen([sys.executable, "-m", "bench.sink", str(cert.chain_path), str(cert.key_path),
                             str(size)], stdout=subprocess.PIPE, text=True)
    emulator = None
    try:
        port = int(sink.stdout.readline())
        emulator = subprocess.Popen(
            [sys.executable, "-m", "emulator", "--offline", "--log-level", "WARNING",
             "--state-dir", tempfile.mkdtemp(prefix="bench-"),
             "--route", f"bench.example:443=127.0.0.1:{port}"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        host = Host(emulator.stdout.readline().strip())
        host.at("ATE0;+QIACT=1")
        host.write(b'AT+QSSLOPEN=1,0,0,"bench.example",443,2\r')
        host.read_until(b"\r\nCONNECT\r\n", timeout=30)
        suite = sink.stdout.readline().strip()
        chunk = os.urandom(1 << 20)
        fd = host.ser.fileno()
        os.set_blocking(fd, True)
        start = time.monotonic()
        for _ in range(size // len(chunk)):
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]
        end, got = sink.stdout.readline().split()
        host.close()
        assert int(got) == size, f"the server got {got} of {size} bytes"
        return size / (float(end) - start) / 1e6, suite
    finally:
        for proc in (emulator, sink):
            if proc is not None:
                proc.terminate()
                proc.wait(10)


def pty_ceiling(size: int = 64 << 20) -> float:
    """MB/s a bare raw pty moves from a writer process to a reader on this machine."""
    import tty
    master, slave = os.openpty()
    tty.setraw(slave)
    tty.setraw(master)
    pid = os.fork()
    if pid == 0:                                   # the writer
        os.close(master)
        chunk = os.urandom(1 << 20)
        for _ in range(size >> 20):
            view = memoryview(chunk)
            while view:
                view = view[os.write(slave, view):]
        time.sleep(0.5)
        os._exit(0)
    os.close(slave)
    got = 0
    start = time.monotonic()
    while got < size:
        got += len(os.read(master, 65536))
    elapsed = time.monotonic() - start
    os.waitpid(pid, 0)
    os.close(master)
    return size / elapsed / 1e6


def engine_ceiling(server: TlsServer, size: int = 64 << 20) -> float:
    """MB/s the engine encrypts in memory after a real handshake (nothing sent)."""
    driver = ClientDriver(TlsClientSession(TlsSettings(server_name="localhost")), server.port)
    driver.handshake()
    session = driver.session
    chunk = os.urandom(1 << 20)
    out = 0
    t = time.perf_counter()
    for _ in range(size // len(chunk)):
        session.send(chunk)
        out += sum(len(record) for record in session.outgoing())
    elapsed = time.perf_counter() - t
    driver.close()
    assert out > size
    return size / elapsed / 1e6


def checksum_median_ms(size: int = 1 << 20, rounds: int = 20) -> float:
    data = os.urandom(size)
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        xor16(data)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def main() -> None:
    pki = make_pki()
    cert = pki.issue("bench", "localhost")
    with TlsServer(cert, legacy=True) as server:
        engine_ms, openssl_ms = handshake_medians(server)
        print(f"handshake median: engine {engine_ms:.1f} ms, Python ssl client {openssl_ms:.1f} ms")
    with TlsServer(cert, legacy=True) as server:
        up, down = at_throughput(server)
        print(f"AT over pty, 1 MiB: up {up:.2f} MB/s (QSSLSEND 1460), "
              f"down (rest of the echo) {down:.2f} MB/s (QSSLRECV 1500)")
    print(f"xor16 checksum of 1 MiB: median {checksum_median_ms():.2f} ms")
    through, suite = transparent_throughput(cert)
    with TlsServer(cert, legacy=True, mode="sink") as server:
        ceiling = engine_ceiling(server)
        print(f"transparent mode, 64 MiB host -> server through the pty: {through:.1f} MB/s "
              f"({suite}); the engine's in-memory ceiling, same suite: {ceiling:.1f} MB/s; "
              f"a bare pty on this machine: {pty_ceiling():.1f} MB/s (goal: at least 50 MB/s "
              f"through the pty)")


if __name__ == "__main__":
    main()
