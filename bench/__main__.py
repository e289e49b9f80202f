"""make bench: prints figures, asserts nothing (speed goals live in issues).

1. TLS handshake median: the sans-IO engine vs Python's ssl client, same server.
2. AT-level throughput through the pty: 1 MiB up (AT+QSSLSEND=<id>,1460) and down
   (AT+QSSLRECV=<id>,1500) against a loopback echo server.
3. The transfer checksum (emulator.storage.checksum.xor16) over 1 MiB.

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


if __name__ == "__main__":
    main()
