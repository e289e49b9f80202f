"""Adversarial, third round of hostile HOST programs against the ML302 profile (OneMO ML302 SSL
AT manual §2.1-§2.10, §3; docs/behaviour.md "ML302 certificate store", "ML302 SSL commands",
AT+CFUN=1,1), aimed at what test_adversarial_ml302_*.py, test_ml302_ssl.py and
test_ssl_options_ml302.py leave out:

- Six contexts configured six different ways (sslversion, ciphersuite lists, seclevel 0/1/2,
  SNI names), six AT+QSSLOPEN lines pipelined byte by byte in one write, each ssid on another
  context: every server sees exactly its context's ClientHello suites, version and name.
- AT+QSECWRITE payloads holding every byte value but Ctrl+Z / ESC, the module's own framing,
  "AT..." lines and "+++" separated by pauses longer than the guard time on the modem's
  clock, with echo on (ATE1, the ML302's default): the echo is the bytes, §2.2's checksum
  exact, nothing runs; checksums that come out 0x0000 / below 0x1000 keep four digits.
- AT+CFUN=1,1 with sockets open and lines pipelined behind it (an AT+QSSLSEND with its data,
  an AT+QSECDEL): the port reads nothing until "+CPIN: READY", the servers never get the
  data, the store keeps its slots, the contexts are back at their defaults.
- +QSSLURC ordering across sockets, and a peer that sends and closes at once read 1 byte at a
  time: "recv" before "close", the bytes exactly once, REMOTE CLOSING, -2 until AT+QSSLCLOSE.
- AT+QSSLSEND of 1460 bytes holding CR, LF, NUL, "+++", "\\r\\nOK\\r\\n" (sent verbatim); 1461 and
  9000 bytes then Ctrl+Z: ERROR, nothing sent; "+++" with guard times inside the prompt: data.
- A power cut (control API reboot) inside the AT+QSECWRITE / AT+QSSLSEND prompts, the host
  finishing its data after "+CPIN: READY": nothing stored or sent, the rest is command-line
  junk; a host that leaves right after AT+CFUN=1,1; AT+CFUN=1,1 concatenated with ';', behind a
  lingering AT+QSSLCLOSE, after AT&W of ATV0/S4/ATQ1, with URCs held in a prompt; every
  AT+QSSLCFG setting and global back to its default; a power cut while online (connectmode 1).
- §2.1's own " /clientCrt.pem" spelling (a space in the quotes) still names the slot.
- A DER certificate (Ctrl+Z and ESC bytes inside): stored up to its first Ctrl+Z, exactly.
- Six seclevel 2 contexts naming the slots crosswise, opened at once: -1 exactly where a
  path is wrong; AT+QSSLCFG / AT+QSECDEL / AT+QSECWRITE pipelined between opens.
- The peer's close racing AT+QSSLRECV answers (never inside a +QSSLRECV block); ATV0 framing;
  "A/" repeating AT+QSSLRECV / AT+QSSLSEND; a seeded random hostile host (opens, sends at
  1/1459/1460/1461 bytes, receives of 0/1/7/1500/1501, closes, peer data and closes, slot
  writes/reads/deletes, hang-ups, restarts, ESC) checked against a model of the manual.

No test here found the emulator departing from the manual or docs/behaviour.md.
"""
from __future__ import annotations

import re
import time

import pytest

from emulator.testing.peers import TlsServer
from tests.e2e.ml302_support import HOST, HOST_IP
from tests.e2e.test_adversarial_ml302_hostile_host_2 import (CTRL_Z, ERROR, OK, Rig, at_state,
                                                              checksum, pkcs8, read_ok, written)
from tests.e2e.socket_support import conn_of, wait_for, wait_received

CPIN = b"\r\n+CPIN: READY\r\n"


@pytest.fixture
def rig(emulator, open_modem, strict_log):
    r = Rig(emulator, open_modem)
    yield r
    r.close_all()


@pytest.fixture
def rig_manual(emulator, open_modem, strict_log):
    r = Rig(emulator, open_modem, manual_time=True)
    yield r
    r.close_all()


def legacy_server(rig: Rig, name: str, port: int = 443, **kw) -> TlsServer:
    kw.setdefault("mode", "echo")
    srv = TlsServer(rig.pki.server, legacy=True, session_cache=False, tickets=False,
                    ciphers="ALL:@SECLEVEL=0", **kw)
    rig.servers.append(srv)
    rig.emulator.router.add_map(name, port, "127.0.0.1", srv.port)
    rig.emulator.router.add_dns(name, HOST_IP)
    return srv


# == six contexts, six sockets, one pipelined write =================================================
CONTEXTS = {  # ctx: (sslversion, ciphersuite, seclevel, expected version, offered ids)
    0: (1, "0X0035", 0, "TLSv1", [0x0035]),
    1: (2, "0X002F", 0, "TLSv1.1", [0x002F]),
    2: (3, "0X003D", 0, "TLSv1.2", [0x003D]),
    3: (3, "0X002F:0X0035", 1, "TLSv1.2", [0x002F, 0x0035]),
    4: (3, "0X0035:0X003D:0X002F", 2, "TLSv1.2", [0x0035, 0x003D, 0x002F]),
    # 0X003D is TLS 1.2 only: pinned to TLS 1.1, Mbed TLS leaves it out of the ClientHello
    5: (2, "0X003D:0X002F", 0, "TLSv1.1", [0x002F]),
}


def test_six_contexts_six_ssids_pipelined_bytewise_each_open_uses_its_own_context(rig):
    pki = rig.pki
    assert rig.secwrite(0, pki.ca.cert_pem) == written(pki.ca.cert_pem)
    assert rig.secwrite(1, pki.client.cert_pem) == written(pki.client.cert_pem)
    key = pkcs8(pki.client.key_pem)
    assert rig.secwrite(2, key) == written(key)
    for ctx, (ver, suites, level, _, _) in CONTEXTS.items():
        line = (f'AT+QSSLCFG="sslversion",{ctx},{ver}\r\nAT+QSSLCFG="ciphersuite",{ctx},"{suites}"\r\n'
                f'AT+QSSLCFG="seclevel",{ctx},{level}\r\n')
        rig.host.write(line)
        for _ in range(3):
            assert rig.host.read_until(OK) == OK
    servers = {}
    for ssid in range(6):
        ctx = 5 - ssid
        servers[ssid] = legacy_server(rig, HOST, 4430 + ssid,
                                      client_ca=pki.ca.cert_pem if CONTEXTS[ctx][2] == 2 else None,
                                      require_client_cert=CONTEXTS[ctx][2] == 2)
    lines = "".join(f'AT+QSSLOPEN={ssid},{5 - ssid},"{HOST}",{4430 + ssid},0\r\n'
                    for ssid in range(6))
    rig.host.write(lines)                                    # one byte per write()
    for _ in range(6):
        # (an earlier open's answer may come before a later line's OK on a loaded machine)
        got = rig.host.read_until(OK, 20)
        assert re.fullmatch(rb"(\r\n\+QSSLOPEN: \d,0\r\n)*\r\nOK\r\n", got), got
    for ssid in range(6):
        assert rig.host.seen(f"\r\n+QSSLOPEN: {ssid},0\r\n".encode(), 20)
    for ssid, srv in servers.items():
        ctx = 5 - ssid
        conn = conn_of(srv)
        _, _, level, version, offered = CONTEXTS[ctx]
        assert conn.version == version, (ssid, ctx, conn.version)
        assert conn.cipher_suites == offered + [0x00FF], (ssid, ctx, conn.cipher_suites)
        assert conn.cipher_id in offered, (ssid, ctx, conn.cipher_id)      # (the server's pick)
        assert conn.sni == HOST
        assert (conn.client_cert_der is not None) == (level == 2), (ssid, ctx)
    for ssid in range(6):
        assert rig.send(ssid, f"to {ssid}".encode()) == b"\r\nSEND OK\r\n"
        urc = f'\r\n+QSSLURC: "recv",1,{ssid}\r\n'.encode()
        assert rig.host.read_until(urc, 20) == urc
        assert rig.recv(ssid, port=4430 + ssid) == f"to {ssid}".encode()
        assert wait_received(conn_of(servers[ssid]), 4) == f"to {ssid}".encode()
    for ssid in range(6):
        rig.close(ssid)
    rig.alive()


# == AT+QSECWRITE with a hostile payload, echo on =================================================
def hostile_payload() -> bytes:
    body = bytes(b for b in range(256) if b not in (0x1A, 0x1B))
    return (b"\r\nOK\r\n" + body + b"\r\n+QSSLURC: \"recv\",1,0\r\nAT+QSECDEL=0\r\n" + b"\x00" * 3
            + b"AT+CFUN=1,1\r" + b"+++")


def test_secwrite_binary_with_framing_lookalikes_and_guarded_plus_escapes_echo_on(rig_manual):
    rig = rig_manual
    assert rig.host.at("ATE1") == OK                         # the ML302's default, said again
    data = hostile_payload()
    rig.host.write("AT+QSECWRITE=0\r\n")
    assert rig.host.read_until(b"> ") == b"AT+QSECWRITE=0\r\r\n> "
    rig.host.whole(data[:-3])
    assert rig.host.read_exactly(len(data) - 3, 20) == data[:-3]        # echoed verbatim
    rig.advance(2)                                           # guard time before the "+++"
    rig.host.write(b"+++")
    assert rig.host.read_exactly(3) == b"+++"
    rig.advance(30)                                          # and long after it: still data
    assert rig.host.quiet_for(0.3) == b""
    rig.host.write(CTRL_Z)
    assert rig.host.read_until(re.compile(rb"\r\nOK\r\n"), 20) == written(data)
    assert rig.host.at("AT+QSECREAD=0") == b"AT+QSECREAD=0\r" + read_ok(data)
    assert rig.host.at("AT+CFUN?") == b"AT+CFUN?\r\r\n+CFUN: 1\r\n" + OK      # nothing ran


@pytest.mark.parametrize("data,want", [
    (b"ABAB", "0000"),
    (b"\x00", "0000"),
    (b"\x00\x07", "0007"),
    (b"\x0f", "0f00"),
    (b"\x12\x34\x12\x35\x00", "0001"),
])
def test_secwrite_small_checksums_keep_four_lowercase_digits(rig, data, want):
    assert checksum(data) == want                            # (the helper agrees with the manual)
    assert rig.secwrite(1, data) == f"\r\n+QSECWRITE: {len(data)},{want}\r\n\r\nOK\r\n".encode()
    assert rig.host.at("AT+QSECREAD=1") == f"\r\n+QSECREAD: 1,{want}\r\n\r\nOK\r\n".encode()


def test_secwrite_bytewise_with_hour_long_pauses_on_the_modem_clock(rig_manual):
    """No inactivity timeout in the prompt (docs): an hour between bytes changes nothing."""
    rig = rig_manual
    data = rig.pki.ca.cert_pem
    rig.host.write("AT+QSECWRITE=0\r\n")
    assert rig.host.read_until(b"> ") == b"\r\n> "
    for i, chunk in enumerate((data[:1], data[1:500], data[500:-1], data[-1:])):
        rig.host.whole(chunk)
        rig.advance(3600)
        assert rig.host.quiet_for(0.1) == b"", i
    rig.host.write(CTRL_Z)
    assert rig.host.read_until(re.compile(rb"\r\nOK\r\n"), 20) == written(data)


# == AT+CFUN=1,1 with sockets open and lines behind it ============================================
def test_cfun_restart_pipelined_send_and_secdel_never_run(rig_manual):
    rig = rig_manual
    rig.server()
    srv2 = rig.server(port=4431)
    assert rig.secwrite(0, rig.pki.ca.cert_pem) == written(rig.pki.ca.cert_pem)
    assert rig.host.at('AT+QSSLCFG="seclevel",3,1') == OK
    rig.open(0)
    rig.open(4, ctx=3, port=4431)
    conn0, conn4 = conn_of(rig.servers[0]), conn_of(srv2)
    rig.host.write(b"AT+CFUN=1,1\r\nAT+QSSLSEND=0\r\nleaked\x1aAT+QSECDEL=0\r\nAT+QSSLSEND=4\r\n"
                   b"leak4\x1a")
    assert rig.host.read_until(OK, 20) == OK
    rig.host.write(b"AT+QSECDEL=0\r\n")                      # before +CPIN: READY: not read
    rig.advance(1)
    assert rig.host.read_until(CPIN, 20) == CPIN
    assert rig.host.quiet_for(0.5) == b""
    conn0.done.wait(10)
    conn4.done.wait(10)
    assert bytes(conn0.received) == b"" and bytes(conn4.received) == b""
    assert rig.host.at("ATE0") == b"ATE0\r" + OK               # echo on again after the restart
    assert rig.host.at("AT+QSECREAD=0") == read_ok(rig.pki.ca.cert_pem)
    assert rig.host.at('AT+QSSLCFG="seclevel",3') == b'\r\n+QSSLCFG: "seclevel",0\r\n' + OK
    assert rig.host.at("AT+QSSLSTATE") == rig.state({}, "IP INITIAL")
    assert b"QSSLURC" not in rig.host.transcript and b"+QSSLOPEN: 0,-" not in rig.host.transcript


def test_cfun_restart_a_line_cut_by_the_boot_does_not_run(rig_manual):
    rig = rig_manual
    assert rig.secwrite(2, b"key") == written(b"key")
    assert rig.host.at("AT+CFUN=1,1") == OK
    rig.host.write(b"AT+QSEC")                              # dropped: the port is not reading
    rig.advance(1)
    assert rig.host.read_until(CPIN, 20) == CPIN
    rig.host.write(b"DEL=2\r\n")
    got = rig.host.quiet_for(0.5)
    assert got == b"DEL=2\r", got                         # echoed junk, dropped (no "AT")
    assert rig.host.at("ATE0").endswith(OK)
    assert rig.host.at("AT+QSECREAD=2") == read_ok(b"key")


# == URC ordering, send-and-close peers ============================================================
def test_urc_order_across_sockets_follows_the_arrivals(rig):
    servers = {}
    for ssid in range(6):
        servers[ssid] = rig.server(f"u{ssid}.iottest.work", mode="sink")
        rig.open(ssid, name=f"u{ssid}.iottest.work")
    conns = {ssid: conn_of(srv) for ssid, srv in servers.items()}
    order = [(5, "recv"), (2, "recv"), (0, "recv"), (2, "close"), (4, "recv"), (5, "close"),
             (3, "close")]
    for ssid, what in order:
        if what == "recv":
            conns[ssid].send(f"data{ssid}".encode())
        else:
            conns[ssid].close()
        urc = (f'+QSSLURC: "recv",1,{ssid}' if what == "recv" else f'+QSSLURC: "close",{ssid}')
        assert rig.host.read_until(f"{urc}\r\n".encode(), 20) == f"\r\n{urc}\r\n".encode()
    assert rig.host.quiet_for(0.3) == b""
    for ssid in (5, 2, 0, 4):
        assert rig.recv(ssid) == f"data{ssid}".encode()
    assert rig.host.at("AT+QSSLSTATE") == rig.state({
        0: at_state("CONNECTED"), 1: at_state("CONNECTED"), 2: at_state("REMOTE CLOSING"),
        3: at_state("REMOTE CLOSING"), 4: at_state("CONNECTED"), 5: at_state("REMOTE CLOSING")})


def test_peer_sends_and_closes_at_once_read_one_byte_at_a_time(rig):
    payload = bytes(range(256)) * 3 + b"\r\nOK\r\n"

    def handler(conn):
        conn.sendall(payload)
        conn.send_close_notify()
    rig.server(handler=handler)
    rig.open(2)
    assert rig.host.read_until(b'"close",2\r\n', 20).endswith(b'\r\n+QSSLURC: "close",2\r\n')
    urcs = re.findall(rb'\+QSSLURC: "(recv|close)"[^\r]*', bytes(rig.host.transcript))
    assert urcs == [b"recv", b"close"], urcs
    got = bytearray()
    for n in (1, 1, 2, 1500, 1, 1460):
        got += rig.recv(2, n)
    while len(got) < len(payload):
        got += rig.recv(2, 1)
    assert bytes(got) == payload
    assert rig.recv(2, 1) == b""
    assert rig.host.at("AT+QSSLRECV=1,2,0") == ERROR
    assert rig.host.at('AT+QSSLOPEN=2,0,"www.iottest.work",443,0') == OK
    assert rig.host.read_until(b"+QSSLOPEN: 2,-2\r\n") == b"\r\n+QSSLOPEN: 2,-2\r\n"
    assert rig.send(2, b"late") == ERROR
    rig.close(2)
    assert rig.host.at("AT+QSSLRECV=1,2,1") == ERROR


# == AT+QSSLSEND at its limit with binary data =====================================================
def test_send_1460_bytes_of_framing_lookalikes_arrive_verbatim(rig):
    srv = rig.server(mode="sink")
    rig.open(1)
    conn = conn_of(srv)
    unit = b"\r\nOK\r\n+++\x00AT+QSSLCLOSE=1\r\n\n\r"
    data = (unit * (1460 // len(unit) + 1))[:1460]
    assert rig.send(1, data) == b"\r\nSEND OK\r\n"
    assert wait_received(conn, 1460) == data
    rig.alive()
    assert rig.host.at("AT+QSSLSTATE") == rig.state({1: at_state("CONNECTED")})


# == a power cut (the control API's reboot) inside the data prompts ================================
def test_reboot_inside_secwrite_prompt_stores_nothing_and_the_rest_runs_nothing(rig):
    pem = rig.pki.ca.cert_pem
    rig.host.write("AT+QSECWRITE=0\r\n")
    assert rig.host.read_until(b"> ") == b"\r\n> "
    rig.host.whole(pem[:400])
    rig.emulator.wait_received(rig.port, sum(h.written for h in rig.hosts))
    assert rig.emulator.control("reboot", ms=0) == {"ok": True}
    assert rig.host.read_until(CPIN, 20) == CPIN
    # the rest of the PEM, its base64 with no "a"/"A" (the key is random: an "aTo..." in it
    # would start a line of its own, ATO, NO CARRIER -- seen in a full run)
    body, end = pem[400:].split(b"-----END")
    rest = body.translate(bytes.maketrans(b"aA", b"bB")) + b"-----END" + end
    rig.host.whole(rest + CTRL_Z + b"\r\n")             # the host did not notice the reset:
    got = rig.host.quiet_for(0.3)                         # one line of junk (echoed), ERROR
    # echo is on again (garbage echoed as received); a line starts at the "AT" inside
    # "CERTIFICATE" of the END line and ends at the CR: ERROR, once
    assert got == rest + CTRL_Z + b"\r" + ERROR, got
    assert rig.host.at("ATE0").endswith(OK)
    assert rig.host.at("AT+QSECREAD=0") == b"\r\n+CME ERROR: 22\r\n"
    assert rig.secwrite(0, pem) == written(pem)


def test_reboot_inside_send_prompt_sends_nothing(rig):
    srv = rig.server(mode="sink")
    rig.open(3)
    conn = conn_of(srv)
    rig.host.write("AT+QSSLSEND=3\r\n")
    assert rig.host.read_until(b"> ") == b"\r\n> "
    rig.host.whole(b"half of it")
    rig.emulator.wait_received(rig.port, sum(h.written for h in rig.hosts))
    assert rig.emulator.control("reboot", ms=0) == {"ok": True}
    assert rig.host.read_until(CPIN, 20) == CPIN
    rig.host.whole(b" and the rest" + CTRL_Z)
    rig.host.quiet_for(0.3)
    conn.done.wait(10)
    assert bytes(conn.received) == b""
    assert rig.host.at("ATE0").endswith(OK)
    assert rig.host.at("AT+QSSLRECV=1,3,1") == ERROR


# == overflowing prompts ============================================================================
def test_secwrite_overflow_then_esc_cancels_with_ok_and_stores_nothing(rig):
    rig.host.write("AT+QSECWRITE=1\r\n")
    assert rig.host.read_until(b"> ") == b"\r\n> "
    rig.host.whole(b"A" * 20000)
    assert rig.host.quiet_for(0.3) == b""
    rig.host.write(b"\x1b")
    assert rig.host.read_until(re.compile(rb"\r\n(OK|ERROR|\+CME ERROR: \d+)\r\n"), 20) == OK
    assert rig.host.at("AT+QSECREAD=1") == b"\r\n+CME ERROR: 22\r\n"


def test_secwrite_overflow_far_past_the_limit_then_ctrl_z(rig):
    rig.host.write("AT+QSECWRITE=2\r\n")
    assert rig.host.read_until(b"> ") == b"\r\n> "
    rig.host.whole(b"AT+QSECDEL=0\r\n" * 3000 + CTRL_Z + b"AT+QSECREAD=2\r\n")
    assert rig.host.read_until(b"+CME ERROR: 20\r\n", 20) == b"\r\n+CME ERROR: 20\r\n"
    assert rig.host.read_until(b"+CME ERROR: 22\r\n", 20) == b"\r\n+CME ERROR: 22\r\n"
    rig.alive()


def test_send_over_1460_then_ctrl_z_is_error_and_nothing_sent(rig):
    srv = rig.server(mode="sink")
    rig.open(5)
    conn = conn_of(srv)
    assert rig.send(5, b"x" * 1461) == ERROR
    assert rig.send(5, b"y" * 9000) == ERROR
    assert rig.send(5, b"z" * 1460) == b"\r\nSEND OK\r\n"
    assert wait_received(conn, 1460) == b"z" * 1460
    time.sleep(0.2)
    assert bytes(conn.received) == b"z" * 1460


# == slots in use =================================================================================
def test_secread_and_secdel_of_slots_a_seclevel_2_socket_uses_then_rewrite_other_material(rig):
    pki = rig.pki
    key = pkcs8(pki.client.key_pem)
    for slot, data in ((0, pki.ca.cert_pem), (1, pki.client.cert_pem), (2, key)):
        assert rig.secwrite(slot, data) == written(data)
    assert rig.host.at('AT+QSSLCFG="seclevel",2,2') == OK
    srv = rig.server(client_ca=pki.ca.cert_pem, require_client_cert=True)
    rig.open(0, ctx=2)
    conn = conn_of(srv)
    assert conn.client_cert_der is not None
    rig.host.write(b"AT+QSECREAD=0\r\nAT+QSECREAD=1\r\nAT+QSECREAD=2\r\n")
    for data in (pki.ca.cert_pem, pki.client.cert_pem, key):
        assert rig.host.read_until(OK) == read_ok(data)
    rig.host.write(b"AT+QSECDEL=2\r\nAT+QSECDEL=1\r\nAT+QSECDEL=0\r\n")
    for _ in range(3):
        assert rig.host.read_until(OK) == OK
    wrong = b"-----BEGIN CERTIFICATE-----\r\nnot one\r\n-----END CERTIFICATE-----\r\n"
    assert rig.secwrite(0, wrong) == written(wrong)
    assert rig.send(0, b"still here") == b"\r\nSEND OK\r\n"
    rig.host.seen(b'+QSSLURC: "recv",1,0\r\n', 20)
    assert rig.recv(0) == b"still here"
    rig.open(1, ctx=2, code=-1)
    assert len(srv.connections) == 1                     # no TCP for the failed open
    rig.close(0)


def test_atv0_framing_of_the_prompts_recv_block_close_and_open_urc(rig):
    """V.250 ATV0: information text "text<CR><LF>", result codes "<n><CR>"; the ML302's
    lines after the final result ("<ssid>,CLOSE OK", +QSSLOPEN) are framed as URCs."""
    rig.server()
    rig.open(0)
    rig.host.write("ATV0\r\n")
    assert rig.host.read_until(b"0\r") == b"0\r"
    rig.host.write("AT+QSECWRITE=0\r\n")
    assert rig.host.read_until(b"> ") == b"> "
    rig.host.write(b"abc" + CTRL_Z)
    assert rig.host.read_until(b"\n0\r") == f"+QSECWRITE: 3,{checksum(b'abc')}\r\n0\r".encode()
    rig.host.write("AT+QSSLSEND=0\r\n")
    assert rig.host.read_until(b"> ") == b"> "
    rig.host.write(b"hello\r\n0\r" + CTRL_Z)
    assert rig.host.read_until(b'"recv",1,0\r\n', 20) == b'SEND OK\r\n+QSSLURC: "recv",1,0\r\n'
    rig.host.write("AT+QSSLRECV=1,0,1500\r\n")
    want = f"+QSSLRECV: {HOST_IP}:443,TCP,9\r\nhello\r\n0\r\r\n0\r".encode()
    assert rig.host.read_exactly(len(want), 20) == want
    rig.host.write("AT+QSSLCLOSE=0\r\n")
    assert rig.host.read_until(b"CLOSE OK\r\n", 20) == b"0\r0,CLOSE OK\r\n"
    rig.host.write('AT+QSSLOPEN=0,0,"www.iottest.work",443,0\r\n')
    assert rig.host.read_until(b"+QSSLOPEN: 0,0\r\n", 20) == b"0\r+QSSLOPEN: 0,0\r\n"
    assert rig.host.quiet_for(0.2) == b""


def test_pipelined_cfg_changes_between_opens_apply_to_the_next_open_only(rig):
    """Each AT+QSSLOPEN takes its context as it is when the line runs (behaviour.md: material
    read at each open): seclevel 0 open, then seclevel 1 with a CA that did not issue the
    server's certificate, then the CA slot rewritten, all in one write."""
    other = rig.pki.client.cert_pem                      # not the server's issuer
    assert rig.secwrite(0, other) == written(other)
    srv = rig.server()
    ca = rig.pki.ca.cert_pem
    rig.host.whole((f'AT+QSSLOPEN=0,1,"{HOST}",443,0\r\nAT+QSSLCFG="seclevel",1,1\r\n'
                    f'AT+QSSLOPEN=1,1,"{HOST}",443,0\r\nAT+QSECDEL=0\r\nAT+QSECWRITE=0\r\n').encode()
                   + ca + CTRL_Z + f'\r\nAT+QSSLOPEN=2,1,"{HOST}",443,0\r\n'.encode())
    for ssid, code in ((0, 0), (1, -1), (2, 0)):
        rig.host.seen(f"\r\n+QSSLOPEN: {ssid},{code}\r\n".encode(), 20)
    assert rig.host.seen(written(ca)) == written(ca)
    assert len(srv.connections) == 3
    assert rig.host.transcript.count(b"+QSSLOPEN:") == 3


def test_host_leaves_right_after_cfun_1_1_and_the_next_host_gets_only_cpin(rig_manual):
    rig = rig_manual
    rig.server()
    rig.open(1)
    rig.host.write("AT+CFUN=1,1\r\n")
    rig.away()                                            # gone before reading OK
    host = rig.back()
    host.write(b"AT+QSSLSTATE\r\n")                     # before +CPIN: READY: not read
    rig.advance(1)
    assert host.read_until(CPIN, 20) == CPIN
    assert host.quiet_for(0.3) == b""
    assert host.at("ATE0") == b"ATE0\r" + OK
    assert host.at("AT+QSSLSTATE") == rig.state({}, "IP INITIAL")
    assert b"OK" not in host.transcript.split(b"+CPIN")[0]


# == QSSLRECV answers racing the peer's close ======================================================
RECV_BLOCK = re.compile(rb"\r\n\+QSSLRECV: ([0-9.]+):443,TCP,(\d+)\r\n")


def test_close_urc_never_lands_inside_a_qsslrecv_answer(rig):
    import threading
    rounds = 12
    for k in range(rounds):
        ssid = k % 6
        go = threading.Event()
        payload = bytes((k + i) % 256 for i in range(3000))

        def handler(conn, payload=payload, go=go, k=k):
            conn.sendall(payload)
            go.wait(10)
            time.sleep(0.0007 * k)
            conn.send_close_notify()
        srv = rig.server(f"r{k}.iottest.work", handler=handler)
        start = len(rig.host.transcript)
        rig.open(ssid, name=f"r{k}.iottest.work")
        urc = f'\r\n+QSSLURC: "recv",1,{ssid}\r\n'.encode()
        assert rig.host.read_until(urc, 20) == urc
        conn_of(srv)
        got = bytearray()
        closed = False
        close_urc = f'\r\n+QSSLURC: "close",{ssid}\r\n'.encode()
        first = True
        while True:
            rig.host.write(f"AT+QSSLRECV=1,{ssid},1500\r\n")
            if first:
                go.set()
                first = False
            stream = rig.host.read_until(re.compile(RECV_BLOCK.pattern + rb"|\r\nOK\r\n"), 20)
            if stream.count(close_urc):
                closed = True
                stream = stream.replace(close_urc, b"", 1)
            m = RECV_BLOCK.search(stream)
            if m is None:
                assert stream == OK, stream
                break
            assert stream == m.group(0), (k, stream)
            assert m.group(1).decode() == HOST_IP
            n = int(m.group(2))
            body = rig.host.read_exactly(n + 8, 20)
            assert body[n:] == b"\r\n\r\nOK\r\n", (k, body[n:])       # nothing inside the block
            got += body[:n]
        assert bytes(got) == payload, k
        if not closed:
            assert rig.host.read_until(close_urc, 20) == close_urc
        assert rig.host.transcript[start:].count(close_urc) == 1
        rig.close(ssid)
    rig.alive()


def test_trickled_data_then_close_read_as_it_comes_one_recv_urc_per_empty_buffer(rig):
    import threading
    chunks = [bytes([65 + i]) * (i * 97 + 1) for i in range(10)]
    step = threading.Event()

    def handler(conn):
        for c in chunks:
            step.wait(10)
            step.clear()
            conn.sendall(c)
        step.wait(10)
        conn.send_close_notify()
    rig.server(handler=handler)
    rig.open(4)
    urc = b'\r\n+QSSLURC: "recv",1,4\r\n'
    got = bytearray()
    for c in chunks:
        step.set()
        assert rig.host.read_until(urc, 20) == urc          # the buffer was empty: one URC
        while len(got) < sum(map(len, chunks[:chunks.index(c) + 1])):
            got += rig.recv(4, 1 if len(got) % 2 else 1500)
        assert rig.recv(4, 1) == b""
    step.set()
    assert rig.host.read_until(b'"close",4\r\n', 20) == b'\r\n+QSSLURC: "close",4\r\n'
    assert bytes(got) == b"".join(chunks)
    assert rig.host.transcript.count(b'"recv",1,4') == len(chunks)
    assert rig.recv(4, 1500) == b""
    assert rig.host.at("AT+QSSLSTATE") == rig.state({4: at_state("REMOTE CLOSING")})


# == a DER certificate (binary, with Ctrl+Z and ESC bytes inside) =================================
def test_der_upload_is_cut_at_its_first_ctrl_z_and_the_rest_runs_nothing(rig):
    from tests.e2e.test_adversarial_ml302_hostile_host_2 import der
    real = der(rig.pki.ca.cert_pem)             # (the run's PKI: its bytes differ per run)
    head = real[:400].replace(CTRL_Z, b"\x00").replace(b"\x1b", b"\x00")
    data = head + CTRL_Z + real[400:]                  # a Ctrl+Z at a known place
    rig.host.write("AT+QSECWRITE=0\r\n")
    assert rig.host.read_until(b"> ") == b"\r\n> "
    rig.host.whole(data + b"\r\n")
    assert rig.host.read_until(re.compile(rb"\r\nOK\r\n"), 20) == written(head)
    junk = rig.host.quiet_for(0.5)                      # the rest is command-line junk:
    assert b"OK" not in junk and b"+QSEC" not in junk and b"> " not in junk, junk
    assert rig.host.at("AT+QSECREAD=0") == read_ok(head)
    assert rig.host.at('AT+QSSLCFG="seclevel",0,1') == OK
    rig.server()
    rig.open(0, code=-1)                                # a truncated CA verifies nothing
    got = rig.host.at("AT+QSSLSTATE")
    assert got.startswith(b'\r\n+QSSLSTATE: "IP STATUS"\r\n+QSSLSTATE: 0,"TCP","'), got
    assert b'",443,"CLOSED",1\r\n+QSSLSTATE: 1,"TCP","",0,"INITIAL",1\r\n' in got, got


def test_cfun_1_1_concatenated_with_store_commands(rig_manual):
    rig = rig_manual
    for slot in (0, 1):
        assert rig.secwrite(slot, b"slot%d" % slot) == written(b"slot%d" % slot)
    rig.host.write(b"AT+QSECDEL=0;+CFUN=1,1;+QSECDEL=1\r\n")
    assert rig.host.read_until(OK, 20) == OK
    rig.advance(1)
    assert rig.host.read_until(CPIN, 20) == CPIN
    assert rig.host.quiet_for(0.3) == b""
    assert rig.host.at("ATE0") == b"ATE0\r" + OK
    assert rig.host.at("AT+QSECREAD=0") == b"\r\n+CME ERROR: 22\r\n"
    assert rig.host.at("AT+QSECREAD=1") == read_ok(b"slot1")


def test_cfun_1_1_pipelined_behind_a_lingering_close_waits_for_it(rig_manual):
    import threading
    rig = rig_manual
    hold = threading.Event()

    def handler(conn):
        while conn.recv():
            pass
        hold.wait(30)
    srv = rig.server(handler=handler)
    rig.open(2)
    conn = conn_of(srv)
    assert rig.secwrite(0, b"ca") == written(b"ca")
    rig.host.write(b"AT+QSSLCLOSE=2\r\nAT+CFUN=1,1\r\nAT+QSECDEL=0\r\n")
    wait_for(lambda: conn.close_notify_received, 10, "the modem's close_notify")
    assert rig.host.quiet_for(0.3) == b""                 # lingering: the port is busy
    rig.advance(10)
    want = OK + b"\r\n2,CLOSE OK\r\n" + OK
    assert rig.host.read_exactly(len(want), 20) == want
    rig.advance(1)
    assert rig.host.read_until(CPIN, 20) == CPIN
    assert rig.host.quiet_for(0.3) == b""
    assert rig.host.at("ATE0") == b"ATE0\r" + OK
    assert rig.host.at("AT+QSECREAD=0") == read_ok(b"ca")     # the line after CFUN never ran
    hold.set()


# == six concurrent seclevel 2 opens whose contexts name the slots crosswise =======================
def test_six_seclevel_2_opens_with_crossed_slot_paths_fail_exactly_where_the_paths_are_wrong(rig):
    pki = rig.pki
    key = pkcs8(pki.client.key_pem)
    for slot, data in ((0, pki.ca.cert_pem), (1, pki.client.cert_pem), (2, key)):
        assert rig.secwrite(slot, data) == written(data)
    crossed = {                    # ctx: (option, path) over the defaults, code expected
        0: ((), 0),
        1: ((("cacert", "/clientCrt.pem"),), -1),       # the client's own certificate as CA
        2: ((("clientkey", "/clientCrt.pem"),), -1),    # a certificate where the key goes
        3: ((("clientcert", "/privateKey.pem"),), -1),  # the key where the certificate goes
        4: ((("clientcert", "/caCrt.pem"), ("clientkey", "/privateKey.pem")), -1),  # key mismatch
        5: ((("cacert", "/caCrt.pem"), ("clientcert", "/clientCrt.pem")), 0),
    }
    lines = []
    for ctx, (opts, _) in crossed.items():
        lines.append(f'AT+QSSLCFG="seclevel",{ctx},2')
        lines += [f'AT+QSSLCFG="{name}",{ctx},"{path}"' for name, path in opts]
    rig.host.whole(("\r\n".join(lines) + "\r\n").encode())
    for _ in lines:
        assert rig.host.read_until(OK) == OK
    srv = rig.server(client_ca=pki.ca.cert_pem, require_client_cert=True)
    rig.host.whole("".join(f'AT+QSSLOPEN={ssid},{ssid},"{HOST}",443,0\r\n'
                           for ssid in range(6)).encode())
    for _ in range(6):
        assert rig.host.read_until(OK, 20) == OK
    for ssid, (_, code) in crossed.items():
        assert rig.host.seen(f"\r\n+QSSLOPEN: {ssid},{code}\r\n".encode(), 20)
    assert rig.host.transcript.count(b"+QSSLOPEN:") == 6
    ok_conns = [c for c in srv.connections if c.handshake_done]
    assert len(ok_conns) == 2
    assert all(c.client_cert_der is not None for c in ok_conns)
    for ssid in (0, 5):
        assert rig.send(ssid, b"mutual %d" % ssid) == b"\r\nSEND OK\r\n"
        urc = f'\r\n+QSSLURC: "recv",1,{ssid}\r\n'.encode()
        assert rig.host.read_until(urc, 20) == urc
        assert rig.recv(ssid) == b"mutual %d" % ssid
    for ssid in (1, 2, 3, 4):
        assert rig.host.at(f"AT+QSSLRECV=1,{ssid},1") == ERROR


def test_plus_plus_plus_with_guard_times_inside_the_send_prompt_is_data(rig_manual):
    rig = rig_manual
    srv = rig.server(mode="sink")
    rig.open(0)
    conn = conn_of(srv)
    rig.host.write("AT+QSSLSEND=0\r\n")
    assert rig.host.read_until(b"> ") == b"\r\n> "
    rig.advance(2)
    rig.host.write(b"+++")
    rig.advance(2)
    rig.host.write(b"x+++")
    rig.advance(5)
    assert rig.host.quiet_for(0.2) == b""
    rig.host.write(CTRL_Z)
    assert rig.host.read_until(b"SEND OK\r\n", 20) == b"\r\nSEND OK\r\n"
    assert wait_received(conn, 7) == b"+++x+++"


def test_cpin_after_cfun_1_1_is_framed_with_the_saved_v0_and_s4(rig_manual):
    """AT&W keeps ATV/ATQ/S-registers across the restart (behaviour.md); the one start-up
    line is framed with them as any URC: ATV0 "text<S3><S4>", ATQ1 hides OK, not URCs."""
    rig = rig_manual
    rig.host.write("ATV0S4=33&W\r\n")
    assert rig.host.read_until(b"\r") == b"0\r"
    rig.host.write("AT+CFUN=1,1\r\n")
    assert rig.host.read_until(b"\r") == b"0\r"
    rig.advance(1)
    assert rig.host.read_until(b"READY\r!", 20) == b"+CPIN: READY\r!"
    rig.host.write("ATV1Q1S4=10&W\r\nAT+CFUN=1,1\r\n")
    rig.emulator.wait_received(rig.port, sum(h.written for h in rig.hosts))
    assert rig.host.quiet_for(0.2) == b""                 # ATE0 saved too; ATQ1: no OK
    rig.advance(1)
    assert rig.host.read_until(CPIN, 20) == CPIN
    assert rig.host.quiet_for(0.2) == b""


def test_urcs_held_in_a_secwrite_prompt_then_cfun_1_1_none_after_the_restart(rig_manual):
    """A "recv" and a "close" raised while the host types a certificate are held (the port
    is in a data phase) and come after its answer; a restart pipelined behind the Ctrl+Z
    must not leave one of them for after "+CPIN: READY" (the sockets are gone then)."""
    rig = rig_manual
    a = rig.server(mode="sink")
    b = rig.server(port=4433, mode="sink")
    rig.open(0)
    rig.open(1, port=4433)
    ca, cb = conn_of(a), conn_of(b)
    rig.host.write("AT+QSECWRITE=0\r\n")
    assert rig.host.read_until(b"> ") == b"\r\n> "
    rig.host.whole(b"part one ")
    ca.send(b"news for 0")
    cb.close()
    time.sleep(0.5)
    assert rig.host.quiet_for(0.2) == b""                 # held during the data phase
    rig.host.whole(b"part two" + CTRL_Z + b"AT+CFUN=1,1\r\n")
    data = b"part one part two"
    head = rig.host.read_until(written(data), 20)
    assert head == written(data)
    rest = rig.host.read_until(OK, 20)
    urcs = {b'\r\n+QSSLURC: "recv",1,0\r\n', b'\r\n+QSSLURC: "close",1\r\n'}
    assert rest.endswith(OK) and all(u in rest for u in urcs), rest
    rig.advance(1)
    assert rig.host.read_until(CPIN, 20) == CPIN
    assert rig.host.quiet_for(0.5) == b""
    assert rig.host.at("ATE0") == b"ATE0\r" + OK
    assert rig.host.at("AT+QSECREAD=0") == read_ok(data)


# == a seeded random hostile host against a model of the manual ====================================
@pytest.mark.parametrize("seed", [3, 302, 2026])
def test_random_hostile_host_against_a_model(rig, seed):
    import random
    rnd = random.Random(seed)
    srv = rig.server(mode="sink")
    slots: dict[int, bytes | None] = {0: None, 1: None, 2: None}
    state: dict[int, str | None] = {i: None for i in range(6)}    # None, "conn", "remote"
    buf: dict[int, bytearray] = {i: bytearray() for i in range(6)}
    conn: dict[int, object] = {}
    sent: dict[int, bytearray] = {}
    alphabet = bytes(b for b in range(256) if b not in (0x1A, 0x1B))

    def payload(n: int) -> bytes:
        return bytes(rnd.choice(alphabet) for _ in range(n))

    deadline = time.monotonic() + 12
    steps = 0
    while time.monotonic() < deadline and steps < 350:
        steps += 1
        op = rnd.choice(["open", "open", "send", "recv", "recv", "close", "peer_send", "peer_send",
                         "peer_close", "secwrite", "secread", "secdel", "state", "hangup",
                         "restart", "esc_send"])
        ssid = rnd.randrange(6)
        if op == "open":
            code = -2 if state[ssid] else 0
            rig.open(ssid, code=code)
            if code == 0:
                state[ssid] = "conn"
                buf[ssid].clear()
                conn[ssid] = conn_of(srv, len(srv.connections) - 1)
                sent[ssid] = bytearray()
        elif op == "send":
            data = payload(rnd.choice([1, 2, 100, 1459, 1460, 1461]))
            got = rig.send(ssid, data)
            if state[ssid] == "conn" and len(data) <= 1460:
                assert got == b"\r\nSEND OK\r\n", (steps, op, ssid)
                sent[ssid] += data
                assert wait_received(conn[ssid], len(sent[ssid])) == bytes(sent[ssid])
            else:
                assert got == ERROR, (steps, op, ssid, state[ssid], len(data))
        elif op == "recv":
            n = rnd.choice([0, 1, 7, 1500, 1501])
            rig.host.write(f"AT+QSSLRECV={rnd.randrange(2)},{ssid},{n}\r\n")
            if not state[ssid] or not 1 <= n <= 1500:
                assert rig.host.read_until(CME_OR_FINAL, 20) == ERROR, (steps, op, ssid, n)
            else:
                want = bytes(buf[ssid][:n])
                del buf[ssid][:n]
                assert rig.recv_answer() == want, (steps, op, ssid, n)
        elif op == "close":
            rig.close(ssid)
            state[ssid] = None
            buf[ssid].clear()
        elif op == "peer_send" and state[ssid] == "conn" and not buf[ssid]:
            data = payload(rnd.choice([1, 5, 1500, 3000]))
            conn[ssid].send(data)
            urc = f'\r\n+QSSLURC: "recv",1,{ssid}\r\n'.encode()
            assert rig.host.read_until(urc, 20) == urc, (steps, op, ssid)
            buf[ssid] += data
            time.sleep(0.05)                           # (3000 bytes: every record in)
        elif op == "peer_close" and state[ssid] == "conn":
            conn[ssid].close()
            urc = f'\r\n+QSSLURC: "close",{ssid}\r\n'.encode()
            assert rig.host.read_until(urc, 20) == urc, (steps, op, ssid)
            state[ssid] = "remote"
        elif op == "secwrite":
            slot = ssid % 3
            data = payload(rnd.choice([1, 2, 3, 64, 1000]))
            if slots[slot] is None:
                assert rig.secwrite(slot, data) == written(data), (steps, op, slot)
                slots[slot] = data
            else:                                       # refused before any prompt
                assert rig.host.at(f"AT+QSECWRITE={slot}") == b"\r\n+CME ERROR: 3\r\n"
        elif op == "secread":
            slot = ssid % 3
            want = (read_ok(slots[slot]) if slots[slot] is not None
                    else b"\r\n+CME ERROR: 22\r\n")
            assert rig.host.at(f"AT+QSECREAD={slot}") == want, (steps, op, slot)
        elif op == "secdel":
            slot = ssid % 3
            assert rig.host.at(f"AT+QSECDEL={slot}") == OK
            slots[slot] = None
        elif op == "hangup":
            rig.reopen()
            rig.alive()
        elif op == "restart" and rnd.random() < 0.3:
            assert rig.host.at("AT+CFUN=1,1") == OK
            assert rig.host.read_until(CPIN, 20) == CPIN
            assert rig.host.at("ATE0") == b"ATE0\r" + OK
            assert rig.host.at("AT+CGACT=1,1") == b"\r\n+CGACT: 1, 1, 10.127.79.43\r\n" + OK
            for i in range(6):
                state[i] = None
                buf[i].clear()
        elif op == "esc_send" and state[ssid] == "conn":
            rig.host.write(f"at+qsslsend={ssid}\r\n")
            assert rig.host.read_until(b"> ") == b"\r\n> "
            rig.host.whole(payload(rnd.choice([0, 1, 1460])) + b"\x1b")
            assert rig.host.read_until(CME_OR_FINAL, 20) == OK
        elif op == "state":
            lines = {}
            for i in range(6):
                if state[i] == "conn":
                    lines[i] = at_state("CONNECTED")
                elif state[i] == "remote":
                    lines[i] = at_state("REMOTE CLOSING")
            got = rig.host.at("AT+QSSLSTATE")
            for i, line in lines.items():
                assert f'+QSSLSTATE: {i},"TCP",{line},1\r\n'.encode() in got, (steps, i, got)
            assert got.startswith(b'\r\n+QSSLSTATE: "IP PROCESSING"' if lines
                                  else b'\r\n+QSSLSTATE: "IP STATUS"'), got
    rig.alive()


CME_OR_FINAL = re.compile(rb"\r\n(OK|ERROR|\+CME ERROR: \d+)\r\n")


def test_a_slash_repeats_qsslrecv_and_qsslsend_but_nothing_after_a_restart(rig):
    """V.250 "A/" (behaviour.md: repeats the previous line at once; none after a reboot):
    a host walking a buffer with A/ gets the next chunks; A/ typed in a prompt is data; A/
    after AT+QSSLSEND opens the prompt again."""
    rig.server()
    rig.open(0)
    assert rig.send(0, b"0123456789") == b"\r\nSEND OK\r\n"
    urc = b'\r\n+QSSLURC: "recv",1,0\r\n'
    assert rig.host.read_until(urc, 20) == urc
    head = f"\r\n+QSSLRECV: {HOST_IP}:443,TCP,".encode()
    rig.host.write(b"AT+QSSLRECV=1,0,4\r\n")
    for chunk in (b"0123", b"4567", b"89"):
        want = head + b"%d\r\n" % len(chunk) + chunk + b"\r\n" + OK
        assert rig.host.read_exactly(len(want), 20) == want
        rig.host.whole(b"A/")
    assert rig.host.read_until(OK, 20) == OK                  # empty now: a bare OK
    rig.host.write(b"AT+QSSLSEND=0\r\n")
    assert rig.host.read_until(b"> ") == b"\r\n> "
    rig.host.whole(b"A/" + CTRL_Z)
    assert rig.host.read_until(urc, 20) == b"\r\nSEND OK\r\n" + urc
    rig.host.whole(b"A/")
    assert rig.host.read_until(b"> ") == b"\r\n> "
    rig.host.whole(b"\x1b")
    assert rig.host.read_until(OK) == OK
    assert rig.recv(0) == b"A/"
    assert rig.host.at("AT+CFUN=1,1") == OK
    assert rig.host.read_until(CPIN, 20) == CPIN
    rig.host.whole(b"A/")
    assert rig.host.quiet_for(0.3) == b"A/"                  # echoed (ATE1 again), nothing run


def test_cfun_1_1_puts_every_qsslcfg_setting_and_global_back_to_its_default(rig):
    queries = ['AT+QSSLCFG="ignorertctime"', 'AT+QSSLCFG="https"', 'AT+QSSLCFG="httpsctxi"'] + [
        f'AT+QSSLCFG="ctxindex",{ctx}' for ctx in range(6)]
    before = [rig.host.at(q) for q in queries]
    writes = ['AT+QSSLCFG="ignorertctime",0', 'AT+QSSLCFG="https",1', 'AT+QSSLCFG="httpsctxi",4']
    for ctx in range(6):
        writes += [f'AT+QSSLCFG="sslversion",{ctx},{ctx % 4}', f'AT+QSSLCFG="seclevel",{ctx},{ctx % 3}',
                   f'AT+QSSLCFG="ciphersuite",{ctx},"0X002F:0X0035"',
                   f'AT+QSSLCFG="cacert",{ctx},"/clientCrt.pem"', f'AT+QSSLCFG="clientkey",{ctx},""']
    rig.host.whole(("\r\n".join(writes) + "\r\n").encode())
    for _ in writes:
        assert rig.host.read_until(CME_OR_FINAL) == OK
    changed = [rig.host.at(q) for q in queries]
    assert all(a != b for a, b in zip(before, changed)), changed
    assert rig.host.at("AT+CFUN=1,1") == OK
    assert rig.host.read_until(CPIN, 20) == CPIN
    assert rig.host.at("ATE0") == b"ATE0\r" + OK
    assert [rig.host.at(q) for q in queries] == before


def test_the_manuals_own_spelling_of_the_client_path_with_a_space_opens_seclevel_2(rig):
    """§2.1's remark prints the client certificate path as " /clientCrt.pem" (a space
    inside the quotes): a host copying it must still reach the slot."""
    pki = rig.pki
    key = pkcs8(pki.client.key_pem)
    for slot, data in ((0, pki.ca.cert_pem), (1, pki.client.cert_pem), (2, key)):
        assert rig.secwrite(slot, data) == written(data)
    assert rig.host.at('AT+QSSLCFG="clientcert",3," /clientCrt.pem"') == OK
    assert rig.host.at('AT+QSSLCFG="clientcert",3') == b'\r\n+QSSLCFG: "clientcert"," /clientCrt.pem"\r\n' + OK
    assert rig.host.at('AT+QSSLCFG="seclevel",3,2') == OK
    srv = rig.server(client_ca=pki.ca.cert_pem, require_client_cert=True)
    rig.open(2, ctx=3)
    assert conn_of(srv).client_cert_der is not None


def test_power_cut_while_online_in_connectmode_1(rig):
    """behaviour.md: online mode under way when the module restarts is gone; the restarted
    module reads command lines (after +CPIN: READY): what the host keeps typing is no data."""
    srv = rig.server(mode="sink")
    rig.host.write(f'AT+QSSLOPEN=1,0,"{HOST}",443,1\r\n')
    assert rig.host.read_until(b"CONNECT\r\n", 20) == b"\r\nCONNECT\r\n"
    conn = conn_of(srv)
    rig.host.whole(b"before the cut")
    assert wait_received(conn, 14) == b"before the cut"
    assert rig.emulator.control("reboot", ms=0) == {"ok": True}
    assert rig.host.read_until(CPIN, 20) == CPIN
    rig.host.whole(b"after the cut\r\n")
    assert rig.host.quiet_for(0.3) == b"after the cut\r"          # echoed junk (ATE1 again)
    conn.done.wait(10)
    assert bytes(conn.received) == b"before the cut"
    assert rig.host.at("ATE0") == b"ATE0\r" + OK
    assert rig.host.at("ATO") == b"\r\nNO CARRIER\r\n"
    assert rig.host.at("AT+QSSLSTATE") == rig.state({}, "IP INITIAL")
