"""python -m bench.thread_cost PORT ROUNDS: what a second thread costs a TLS handshake.

A bare python-mbedtls client (bench.__main__.mbedtls_handshake) handshakes ROUNDS times
with the bench's server at PORT, then starts and joins one thread that does nothing, then
handshakes ROUNDS times again; prints the two medians in ms ("before after").  From the
first pthread_create on, glibc takes its arena lock in every calloc() (calloc has no
per-thread cache), and Mbed TLS's bignum code calls it thousands of times per ECDHE
handshake -- which is why the emulator keeps one thread until a big send needs the seal
worker.  A process of its own: the bench's host must stay single-threaded.
"""
from __future__ import annotations

import statistics
import sys
import threading

from bench.__main__ import mbedtls_config, mbedtls_handshake


def median_ms(context, port: int, rounds: int) -> float:
    times = []
    for _ in range(rounds + 3):
        spent, sock, _ = mbedtls_handshake(context, port)
        sock.close()
        times.append(spent)
    return statistics.median(times[3:]) * 1000


def main(port: int, rounds: int) -> None:
    context = mbedtls_config()
    before = median_ms(context, port, rounds)
    thread = threading.Thread(target=lambda: None)
    thread.start()
    thread.join()
    after = median_ms(context, port, rounds)
    print(f"{before:.4f} {after:.4f}", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
