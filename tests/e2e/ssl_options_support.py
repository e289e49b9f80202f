"""Shared bits of the AT+QSSLCFG tests (tests/test_ssl_options_*.py and the SSL hardening
tests): every option driven through the pty (EC2x profile) and judged from the SERVER side
(emulator.testing.peers: OpenSSL). Their fixtures (pki, net) are in tests/conftest.py."""
from __future__ import annotations

import re

HOST = "www.iottest.work"        # a DNS name the shared PKI's server certificate carries
PORT = 8443


def cfg(modem, option: str, ctx: int, *values) -> None:
    line = f'AT+QSSLCFG="{option}",{ctx},' + ",".join(str(v) for v in values)
    assert modem.at(line) == b"\r\nOK\r\n", line


def trust(modem, ctx: int, ca_pem: bytes, name: str = "UFS:ca.pem", seclevel: int = 1,
          session_cache: bool = True) -> None:
    """Upload a CA (once per name) and verify against it; session_cache off, because a
    resumed session is not verified again (even after AT+CCLK moved the modem clock).
    session_cache False: a module without that option (a BG96), left alone."""
    if name.encode() not in modem.at('AT+QFLST="*"'):
        assert modem.upload(name, ca_pem).endswith(b"OK\r\n")
    cfg(modem, "seclevel", ctx, seclevel)
    cfg(modem, "cacert", ctx, f'"{name}"')
    if session_cache:
        cfg(modem, "session_cache", ctx, 0)


def opened(modem, client_id: int, timeout: float = 10) -> int:
    line = modem.seen(re.compile(rb"\r\n\+QSSLOPEN: %d,(-?\d+)\r\n" % client_id), timeout)
    return int(re.search(rb"(-?\d+)\r\n$", line).group(1))


def open_ssl(modem, ctx: int, client_id: int = 0, host: str = HOST, port: int = PORT,
             timeout: float = 10) -> int:
    """AT+QSSLOPEN in buffer mode; returns the <err> of +QSSLOPEN."""
    assert modem.at(f'AT+QSSLOPEN=1,{ctx},{client_id},"{host}",{port}') == b"\r\nOK\r\n"
    return opened(modem, client_id, timeout)


def close(modem, client_id: int = 0) -> None:
    assert modem.at(f"AT+QSSLCLOSE={client_id}") == b"\r\nOK\r\n"


def s_server_round_trip(modem, server, up: bytes, down: bytes, **since) -> None:
    """A line up to an `openssl s_server` (AT+QSSLSEND on socket 0: SEND OK, the server
    prints it) and one back (AT+QSSLRECV); since: where the server's output is searched."""
    assert modem.send_data(0, up) == b"\r\nSEND OK\r\n"
    server.wait_for_output(re.escape(up.rstrip(b"\n")), **since)
    server.write(down)
    assert recv_all(modem, 0, len(down)) == down


def last_error(modem) -> int:
    answer = modem.at("AT+QIGETERROR")
    return int(re.search(rb"\+QIGETERROR: (\d+),", answer).group(1))


def recv_all(modem, client_id: int, want: int, timeout: float = 10) -> bytes:
    """AT+QSSLRECV until `want` bytes came (after the "recv" URC)."""
    modem.seen(b'+QSSLURC: "recv",%d\r\n' % client_id, timeout)
    data = b""
    for _ in range(50):
        answer = modem.at(f"AT+QSSLRECV={client_id},1500")
        m = re.search(rb"\+QSSLRECV: (\d+)\r\n", answer)
        n = int(m.group(1))
        data += answer[m.end():m.end() + n]
        if len(data) >= want:
            return data
        if n == 0:
            modem.seen(b'+QSSLURC: "recv",%d\r\n' % client_id, timeout)
    raise AssertionError(f"only {data!r}")
