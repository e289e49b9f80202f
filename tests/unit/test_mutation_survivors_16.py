"""Mutation survivors, round 16: the ML302 side -- emulator/commands/ssl_ml302.py
(AT+QSSLCFG / QSSLOPEN / QSSLSEND / QSSLRECV / QSSLCLOSE / QSSLSTATE), emulator/commands/secstore.py
and the certificate store under it (emulator/storage/secstore.py, the XOR checksum of
emulator/storage/checksum.py: ML302 manual §2.2-2.4) and emulator/modem/clock.py (AT+CCLK, the
clock the certificate date checks use).  Each test pins a behaviour that a small change to
those modules (the mutant named in its docstring) left every earlier test passing on (two
say where a slower e2e test does catch theirs); the
expected values come from the ML302 manual and docs/behaviour.md ("ML302 certificate store",
"ML302 SSL commands", the AT+CCLK lines), not from the emulator's current output."""
from __future__ import annotations

import os
import socket
import threading
import time
from datetime import datetime, timezone

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from emulator.modem.clock import ModemClock
from emulator.sockets.service import ssl_service
from emulator.storage import secstore as secstore_module
from emulator.storage.checksum import xor16
from emulator.storage.secstore import SLOT_CA_CERT, SecStore
from emulator.testing.peers import TlsServer, default_pki

CA_PEM = (b"-----BEGIN CERTIFICATE-----\n"
          + b"MIIBszCCAVmgAwIBAgIUQ2FDZXJ0Rm9yVGVzdGluZ09ubHkwCgYIKoZIzj0EAwIw\n" * 8
          + b"-----END CERTIFICATE-----\n")


# -- the certificate store (emulator/storage/secstore.py) ----------------------------------------
def slot_file(state_dir, slot: int):
    return state_dir / "secstore" / f"slot{slot}.bin"


def forge(state_dir, slot: int, plaintext: bytes, *, checksum: int, length: int) -> None:
    """Write slot `slot` as the store would, encrypted and authenticated under the modem's own
    key, but with the header's checksum / length fields chosen by the test: a blob that
    decrypts, whose header disagrees with its content (a store written by a buggy or other
    firmware version)."""
    key = (state_dir / "secstore" / "device.key").read_bytes()
    nonce = os.urandom(12)
    header = secstore_module._HEADER.pack(secstore_module._MAGIC, secstore_module._VERSION, slot,
                                          checksum, length, nonce)
    slot_file(state_dir, slot).write_bytes(header + AESGCM(key).encrypt(nonce, plaintext, header))


def test_a_blob_cut_right_after_the_checksum_still_reports_that_checksum(tmp_path):
    """Mutant: _decrypt's salvage of a header cut short taking `len(blob) > 8` for `>= 8`.
    The header starts magic(4) version(1) slot(1) checksum(2): a slot file truncated to 8
    bytes still holds the whole checksum, and the store's contract (module docstring: "the
    checksum from its header (0 if the header itself is unreadable)") reports it with
    good=0 -- AT+QSECREAD: 0,<checksum written>; 7 bytes no longer hold it: 0."""
    state = tmp_path / "state"
    store = SecStore(state)
    store.write(SLOT_CA_CERT, CA_PEM)
    whole = slot_file(state, SLOT_CA_CERT).read_bytes()
    slot_file(state, SLOT_CA_CERT).write_bytes(whole[:8])
    assert store.status(SLOT_CA_CERT) == (0, xor16(CA_PEM))
    assert store.load(SLOT_CA_CERT) is None
    slot_file(state, SLOT_CA_CERT).write_bytes(whole[:7])
    assert store.status(SLOT_CA_CERT) == (0, 0)



def test_a_short_blob_of_another_version_salvages_no_checksum(tmp_path):
    """Mutant: the short-blob salvage checking the magic only (blob[:4]), not magic + version.
    A whole blob of an unknown version reads (0, 0) -- "0 if the header itself is unreadable"
    (another version's layout is unknown, test_storage_secstore's flip(4)); cut short, the same
    header must not be read as this version's either: (0, 0), not (0, <bytes 6-7>)."""
    state = tmp_path / "state"
    store = SecStore(state)
    store.write(SLOT_CA_CERT, CA_PEM)
    blob = bytearray(slot_file(state, SLOT_CA_CERT).read_bytes()[:10])
    assert store.status(SLOT_CA_CERT) == (1, xor16(CA_PEM))
    slot_file(state, SLOT_CA_CERT).write_bytes(bytes(blob))
    assert store.status(SLOT_CA_CERT) == (0, xor16(CA_PEM))      # this version, cut: salvaged
    blob[4] ^= 0x01                                              # version 1 -> 0
    slot_file(state, SLOT_CA_CERT).write_bytes(bytes(blob))
    assert store.status(SLOT_CA_CERT) == (0, 0)

def test_a_blob_whose_header_length_disagrees_with_its_content_is_damaged(tmp_path):
    """Mutant: _decrypt no longer comparing the decrypted length with the header's <length>.
    A slot whose header says 5 bytes but holds 6 (with the checksum of those 6 bytes, so
    that only the length disagrees) is not what AT+QSECWRITE stored: damaged, +QSECREAD: 0 and no material for the
    TLS engine (docs/behaviour.md: "a damaged or tampered slot reads +QSECREAD: 0,<checksum>")."""
    state = tmp_path / "state"
    store = SecStore(state)
    store.write(SLOT_CA_CERT, b"seed")                 # (makes the device key)
    store.delete(SLOT_CA_CERT)
    forge(state, SLOT_CA_CERT, b"abcdef", checksum=xor16(b"abcdef"), length=5)
    assert store.status(SLOT_CA_CERT)[0] == 0
    assert store.load(SLOT_CA_CERT) is None


def test_a_blob_whose_content_misses_its_stored_checksum_is_not_loaded(tmp_path):
    """Mutant: load() returning the decrypted bytes without comparing their checksum with the
    header's.  Manual §2.3: AT+QSECREAD recomputes the checksum and compares it with the one
    AT+QSECWRITE stored; different = the certificate is wrong (<good> 0).  A slot that reads
    good=0 must not be handed to the TLS engine as a certificate either (load: "None if empty
    or damaged")."""
    state = tmp_path / "state"
    store = SecStore(state)
    store.write(SLOT_CA_CERT, b"seed")
    store.delete(SLOT_CA_CERT)
    forge(state, SLOT_CA_CERT, CA_PEM, checksum=xor16(CA_PEM) ^ 0x0101, length=len(CA_PEM))
    assert store.status(SLOT_CA_CERT)[0] == 0
    assert store.load(SLOT_CA_CERT) is None


def test_qsecread_of_a_mismatching_slot_prints_the_recomputed_checksum(tmp_path):
    """Mutant: status() reporting the header's stored checksum instead of the recomputed one
    when both are known and differ.  Manual §2.3: "qsecread 将再次计算证书或密钥的校验和, then
    compares it with the one qsecwrite stored": the <checksum> AT+QSECREAD prints is the one it
    computed now (with good=0 when it differs), which is how a host sees what the slot really
    holds."""
    state = tmp_path / "state"
    store = SecStore(state)
    store.write(SLOT_CA_CERT, b"seed")
    store.delete(SLOT_CA_CERT)
    forge(state, SLOT_CA_CERT, CA_PEM, checksum=xor16(CA_PEM) ^ 0x0101, length=len(CA_PEM))
    assert store.status(SLOT_CA_CERT) == (0, xor16(CA_PEM))


def test_a_symlink_planted_as_a_slot_reads_as_a_damaged_slot(tmp_path):
    """Mutant: _DirectoryBlobs.get no longer answering ELOOP (O_NOFOLLOW on a symlink) with
    b"" (filled, damaged): the error becomes a host storage failure (+CME ERROR: 23).  A
    symlink in the store is something other than a slot file, like the FIFO or the directory
    docs/behaviour.md names ("reads as a damaged slot"): +QSECREAD: 0,0000, and the slot is
    filled (AT+QSECDEL, then write, recovers)."""
    state = tmp_path / "state"
    store = SecStore(state)
    store.write(SLOT_CA_CERT, CA_PEM)
    target = tmp_path / "elsewhere.bin"
    target.write_bytes(slot_file(state, SLOT_CA_CERT).read_bytes())
    slot_file(state, SLOT_CA_CERT).unlink()
    os.symlink(target, slot_file(state, SLOT_CA_CERT))
    assert store.status(SLOT_CA_CERT) == (0, 0)
    assert store.load(SLOT_CA_CERT) is None
    assert store.is_filled(SLOT_CA_CERT)
    store.delete(SLOT_CA_CERT)
    assert store.write(SLOT_CA_CERT, b"new") == (3, xor16(b"new"))
    assert target.exists()                      # the link is removed, never what it points to


# -- the modem clock (emulator/modem/clock.py) ---------------------------------------------------
class FixedTime:
    """The computer's clock for ModemClock, moved by hand."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_sntp_moves_the_clock_from_where_at_cclk_set_it():
    """Mutant: ModemClock.adjust replacing the offset (`= seconds`) instead of adding to it.
    AT+QNTP with <autosettime> 1 moves the modem clock by the offset SNTP measured against the
    MODEM's clock (netutil: clock.adjust(offset), then "synced = clock.now()"): a clock set by
    AT+CCLK to 2019 and corrected by +5 s reads 2019 + 5 s, not the computer's time + 5 s
    (docs/behaviour.md: once set, the clock "runs on from the value set").  (The mutant
    survived the AT+CCLK tests; test_adversarial_netutil's QNTP tests catch it too, through
    the pty: this pins it at the clock itself.)"""
    system = FixedTime(1_700_000_000.0)                  # 2023-11-14
    clock = ModemClock(32, now=system)
    assert clock.set_local("19/10/12,09:05:55+32")
    clock.adjust(5.0)
    assert clock.format_local() == "19/10/12,09:06:00+32"
    system.t += 60
    assert clock.format_local() == "19/10/12,09:07:00+32"
    clock.adjust(-0.5)
    assert clock.now() == datetime(2019, 10, 12, 1, 6, 59, 500000, tzinfo=timezone.utc)


@pytest.mark.parametrize("text", ["19/10/12,09:05:55+32x", "19/10/12,09:05:55+320", "19/10/12,09:05:55+32 "])
def test_set_local_refuses_trailing_characters(text):
    """Mutant: the AT+CCLK pattern without its end anchor ($): "yy/MM/dd,hh:mm:ss±zz" followed
    by anything would set the clock.  (Over the pty AT+CCLK's max_len=20 happens to refuse
    such strings first; set_local's own contract is "False when malformed", and nothing about
    the clock is changed.)"""
    system = FixedTime(1_700_000_000.0)
    clock = ModemClock(32, now=system)
    before = clock.format_local()
    assert clock.set_local(text) is False
    assert clock.format_local() == before and clock.quarters == 32


# -- the ML302 SSL commands over the pty (emulator/commands/ssl_ml302.py) ------------------------
ML_HOST = "www.iottest.work"
ML_HOST_IP = "106.12.79.254"


def ml302_attached(open_modem):
    """(Host, ModemPort) of an ML302 with PDP context 1 active, seclevel 0 on context 0."""
    host, port = open_modem("ml302")
    assert host.at('AT+CGDCONT=1,"IP","CMNET"') == b"\r\nOK\r\n"
    assert host.at("AT+CGACT=1,1") == b"\r\n+CGACT: 1, 1, 10.127.79.43\r\n\r\nOK\r\n"
    assert host.at('AT+QSSLCFG="seclevel",0,0') == b"\r\nOK\r\n"
    return host, port


def wait_for(emulator, predicate, timeout: float = 15.0) -> None:
    """Until predicate() (run on the emulator's loop) is true."""
    deadline = time.monotonic() + timeout
    while not emulator.run(predicate):
        assert time.monotonic() < deadline, "condition never met"
        time.sleep(0.02)


def test_a_failed_opens_answer_waiting_for_the_line_is_dropped_by_qsslclose(open_modem, emulator):
    """Mutant: AT+QSSLCLOSE of an ssid not in use no longer dropping the URCs about it that
    still wait for the port (svc.drop_news).  docs/behaviour.md ("SSL sockets (EC2x)", both
    modules): a close "takes effect when the command runs ...: from then on nothing about
    that socket reaches the host (its open's late answer, ... URCs that were waiting for a busy
    port) ... so the id can be reused in the same line"; "Every open ends in exactly one
    +QSSLOPEN unless the host closes the socket first".  One line opens ssid 0 towards a
    refused port, closes the connected ssid 1 (lingering: its server holds TCP until told) and
    closes ssid 0: the open fails while the line runs, its "+QSSLOPEN: 0,-1" waits for the
    line's end, and AT+QSSLCLOSE=0 must throw it away."""
    release = threading.Event()
    server = TlsServer(default_pki().server, handler=lambda conn: release.wait(15),
                       ciphers="DEFAULT:@SECLEVEL=0")
    refusing = socket.socket()
    refusing.bind(("127.0.0.1", 0))                       # bound, never listening: RST
    try:
        emulator.router.add_map(ML_HOST, 443, "127.0.0.1", server.port)
        emulator.router.add_dns(ML_HOST, ML_HOST_IP)
        emulator.router.add_map("refused.test", 443, "127.0.0.1", refusing.getsockname()[1])
        host, port = ml302_attached(open_modem)
        assert host.at(f'AT+QSSLOPEN=1,0,"{ML_HOST}",443,0') == b"\r\nOK\r\n"
        assert host.read_until(b"\r\n+QSSLOPEN: 1,0\r\n", timeout=15) == b"\r\n+QSSLOPEN: 1,0\r\n"
        modem = port.modem
        svc = ssl_service(modem)
        host.write('AT+QSSLOPEN=0,0,"refused.test",443,0;+QSSLCLOSE=1;+QSSLCLOSE=0\r')
        # ssid 0's open has failed and its answer waits behind the lingering close of ssid 1
        wait_for(emulator, lambda: any(entry[1] == svc.news(0) for entry in modem.interpreter._urcs))
        release.set()                                       # ssid 1's server closes: the line goes on
        answer = host.read_until(b"0,CLOSE OK\r\n", timeout=15)
        answer += host.quiet_for(0.5)
        assert b"+QSSLOPEN" not in answer, answer
        assert answer == b"\r\nOK\r\n\r\n1,CLOSE OK\r\n\r\n0,CLOSE OK\r\n"
        # ...and the id is free for the next open
        assert host.at('AT+QSSLOPEN=0,0,"refused.test",443,0') == b"\r\nOK\r\n"
        assert host.read_until(b"\r\n+QSSLOPEN: 0,-1\r\n", timeout=15) == b"\r\n+QSSLOPEN: 0,-1\r\n"
        assert host.quiet_for(0.3) == b""
    finally:
        release.set()
        refusing.close()
        server.close()


def test_0xffff_offers_only_the_suites_this_tls_build_can(open_modem, emulator, monkeypatch):
    """Mutant: AT+QSSLOPEN passing the whole ML302 table as allow_ciphers, not only the suites
    suite_offerable() says this TLS build can offer.  docs/behaviour.md (ciphersuite):
    0XFFFF = "the profile's table in the note's order (RC4/3DES rows only when tls_engine.native
    works)"; ssl_ml302: "0XFFFF = the ML302 suites this TLS build can offer, rather than failing
    the open".  A build without RC4/3DES (suite_offerable false for 0x0005, 0x0004, 0x000A,
    as without tls_engine.native) offers 0X0035, 0X002F, 0X003D in the table's order (+ SCSV)."""
    from emulator.commands import ssl_ml302
    real = ssl_ml302.suite_offerable
    monkeypatch.setattr(ssl_ml302, "suite_offerable", lambda suite: suite not in (0x0005, 0x0004, 0x000A) and real(suite))
    with TlsServer(default_pki().server) as server:
        emulator.router.add_map(ML_HOST, 443, "127.0.0.1", server.port)
        host, _ = ml302_attached(open_modem)
        assert host.at('AT+QSSLCFG="ciphersuite",0') == b'\r\n+QSSLCFG: "ciphersuite",0XFFFF\r\n\r\nOK\r\n'
        assert host.at(f'AT+QSSLOPEN=0,0,"{ML_HOST}",443,0') == b"\r\nOK\r\n"
        assert host.read_until(b"\r\n+QSSLOPEN: 0,0\r\n", timeout=15) == b"\r\n+QSSLOPEN: 0,0\r\n"
        conn = server.wait_handshake()
        assert conn.cipher_suites == [0x0035, 0x002F, 0x003D, 0x00FF]
        assert host.at("AT+QSSLCLOSE=0").startswith(b"\r\nOK\r\n")


def test_an_unreadable_store_is_reported_as_unreadable_not_as_a_missing_certificate(tmp_path):
    """Mutant: read_slot_material answering a store that cannot be read now (SecStoreError)
    with None -- "not found", as an empty slot -- instead of MaterialUnreadable.  Both fail
    the open with -1, but docs/behaviour.md ("ML302 certificate store") keeps the two apart: a
    store the computer cannot read is the module's memory failure, "the answer's log line
    saying why", and "An unreadable device.key is never taken for a damaged one"; the open's
    log must say the slot cannot be read (to_tls_settings: "cacert file ... cannot be read:
    <why>"), not that there is no certificate.  Here the store's directory was deleted while
    the modem runs.  (The ML302 SSL tests let the mutant pass; test_review_today_2's
    test_ml302_slot_unreadable_at_the_open_fails_it_then_recovers catches it by its log line
    through the pty, in ~20 s: this pins it directly.)"""
    import shutil
    import types

    from emulator.commands.ssl_ml302 import read_slot_material
    from emulator.sockets.context import MaterialUnreadable

    state = tmp_path / "state"
    store = SecStore(state)
    store.write(SLOT_CA_CERT, CA_PEM)
    read = read_slot_material(types.SimpleNamespace(secstore=store))
    assert read("/caCrt.pem") == CA_PEM
    assert read("/clientCrt.pem") is None                  # an empty slot: not found
    assert read("UFS:ca.pem") is None                      # not a slot path
    shutil.rmtree(state / "secstore")
    with pytest.raises(MaterialUnreadable, match="slot 0"):
        read("/caCrt.pem")


def test_the_ctxindex_query_takes_no_value(open_modem):
    """Mutant: AT+QSSLCFG="ctxindex",<ctx> allowing a third parameter (at_most(3)).  The
    manual's form is AT+QSSLCFG="ctxindex",<ctxindex>: nothing is set through it, so a value
    after it is a syntax error, ERROR at once (ssl_ml302: "Syntax errors (a value out of range,
    a missing parameter) are ERROR at once"; every other option's query with one value too many
    is ERROR too), and it changes nothing."""
    host, _ = open_modem("ml302")
    full = b'\r\n+QSSLCFG: 2,4,0,0XFFFF,"/caCrt.pem","/clientCrt.pem","/privateKey.pem"\r\n\r\nOK\r\n'
    assert host.at('AT+QSSLCFG="ctxindex",2') == full
    assert host.at('AT+QSSLCFG="ctxindex",2,1') == b"\r\nERROR\r\n"
    assert host.at('AT+QSSLCFG="ctxindex",2,"x"') == b"\r\nERROR\r\n"
    assert host.at('AT+QSSLCFG="ctxindex",2') == full


def test_ignorertctime_is_every_contexts_ignore_local_time(open_modem, emulator):
    """Mutant: "ignorertctime" mirrored into context 0 only (caught before only by the ML302
    Hypothesis model, minutes in).  docs/behaviour.md: `ignorertctime` "is global, default 1,
    and applies to every context"."""
    host, port = ml302_attached(open_modem)
    svc = ssl_service(port.modem)
    every = lambda: [ctx["ignorelocaltime"] for ctx in svc.contexts.values()]   # noqa: E731
    assert emulator.run(every) == [1] * len(svc.contexts)
    assert host.at('AT+QSSLCFG="ignorertctime",0') == b"\r\nOK\r\n"
    assert emulator.run(every) == [0] * len(svc.contexts)
    assert host.at('AT+QSSLCFG="ignorertctime",1') == b"\r\nOK\r\n"
    assert emulator.run(every) == [1] * len(svc.contexts)


def test_qsslrecv_on_a_socket_still_opening_is_an_error_at_once(open_modem, emulator):
    """Mutant: AT+QSSLRECV allowed on an ssid whose open is under way (caught before only by a
    test that hung).  ssl_ml302: a socket INITIAL or OPENING "is not connected": the read is
    refused at once while the handshake waits on a server that accepted TCP and says nothing."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True).start()
    try:
        emulator.router.add_map(ML_HOST, 443, "127.0.0.1", listener.getsockname()[1])
        emulator.router.add_dns(ML_HOST, ML_HOST_IP)
        host, port = ml302_attached(open_modem)
        assert host.at(f'AT+QSSLOPEN=2,0,"{ML_HOST}",443,0') == b"\r\nOK\r\n"
        deadline = time.monotonic() + 10
        while not accepted:                                 # the TCP connect is made: OPENING
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert host.at("AT+QSSLRECV=1,2,100", timeout=5).endswith(b"ERROR\r\n")
        assert host.at("AT+QSSLCLOSE=2", timeout=5) == b"\r\nOK\r\n"
        assert host.read_until(b"2,CLOSE OK\r\n", timeout=5) == b"\r\n2,CLOSE OK\r\n"
        assert b"+QSSLOPEN" not in host.quiet_for(0.3)
    finally:
        listener.close()
        for conn in accepted:
            conn.close()
