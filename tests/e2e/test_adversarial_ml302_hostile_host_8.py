"""Adversarial, eighth round of hostile HOST programs against the ML302 profile (OneMO ML302 SSL
AT manual, /work/shared/seeds/000_*.txt, §2.2-§2.4 and §2.7; docs/behaviour.md "ML302
certificate store", "ML302 SSL commands" and the control API's `reboot`), aimed at what rounds
1-7 (test_adversarial_ml302_*.py) leave out.

- A power cut (control API `reboot`) at every point of an AT+QSECWRITE into slot 0 while slots 1
  and 2 hold material: the line typed without its CR, at the prompt, mid-data, right after ESC,
  in the instant after Ctrl+Z (the answer never read), after the answer.  Afterwards every slot
  is all or nothing: AT+QSECREAD of slot 0 is +CME ERROR: 22 or "+QSECREAD: 1,<checksum of the
  whole upload>" (never a damaged "0," nor a partial file), slots 1 and 2 untouched.
- Likewise AT+QSECDEL: a delete answered OK survives the power cut, and a rewrite after it.
- Four AT+QSECWRITE prompts and three AT+QSECREAD pipelined in one write (slot 0, slot 1, an
  oversize slot 2 ended by Ctrl+Z, slot 0 again -- filled, refused before its prompt): the
  answers in order, byte for byte, and the slots as the answers said.
- AT+CFUN=1,1 written right behind the Ctrl+Z of an upload (same write): the upload is answered,
  stored, survives the restart; AT+QSECREAD of every slot after it.
- §2.2's checksum against a host's off-by-one ranges: data chosen so that the XOR over
  data[1:], data[:-1], data + the Ctrl+Z and data[1:]+Ctrl+Z all differ from the manual's; the
  module answers only the manual's.
- A host with ATE1 (the ML302's default) typing AT+QSSLSEND's data byte by byte past 1460 then
  Ctrl+Z: the echo is the typed bytes, the answer ERROR, the server gets nothing; ESC after 1460
  is OK; exactly 1460 is SEND OK and arrives once.
- Three AT+QSSLSEND prompts with their data and AT+CFUN=1,1 in one write: three SEND OK, OK,
  +CPIN: READY; every server gets its 1460 bytes once (docs: a restart sends what SEND OK took).
- A `slow` fault holding the AT+QSECWRITE / AT+QSECDEL answer, cut by a power cut (slot all or
  nothing, no answer) or a hang-up (the command's work done, its answer never reaches the next
  host).
- AT+QSSLRECV with <length> 1 / 1500 / 0 / 1501 / 7 / 2 in turn while the server trickles 400
  records: every byte once and in order, 0 / 1501 ERROR, no URC inside an answer, a "recv" URC
  for each arrival into an emptied buffer.
- S5 (backspace) set to BS, '-' and DEL: at both prompts it is data (stored / sent verbatim,
  echoed verbatim with ATE1), the checksum covers it.
- A power cut while AT+QSSLCLOSE lingers (server deaf to close_notify) with AT+QSSLSTATE and
  AT+QSECDEL pipelined behind: no OK / CLOSE OK ever, the pipelined lines never run.

Found: no bug this round (every test passes); the state directory never holds a temporary file
after a power cut at any point of an upload.
"""
from __future__ import annotations

import re

import pytest

from emulator.testing.peers import default_pki
from emulator.testing.host import Host
from tests.e2e.socket_support import conn_of, wait_for, wait_received
from tests.e2e.test_adversarial_ml302_hostile_host_2 import CTRL_Z, ERROR, ESC, OK, checksum, read_ok, written
from emulator.storage.atomic_file import TEMP_PREFIX
from tests.e2e.test_adversarial_ml302_hostile_host_7 import CME3, CME22, DONE, PROMPT, modem, qsslstate  # noqa: F401

CPIN = b"\r\n+CPIN: READY\r\n"
CME20 = b"\r\n+CME ERROR: 20\r\n"


def _material():
    pki = default_pki()
    return pki.ca.cert_pem, pki.client.cert_pem, pki.client.key_pem


def _reboot(modem) -> None:
    """Power cut: wait for the restarted module's +CPIN: READY, then echo off again."""
    assert modem.emulator.control("reboot", ms=0) == {"ok": True}
    modem.host.read_until(CPIN, 20)
    modem.host.quiet_for(0.2)
    assert modem.at("ATE0").endswith(OK)


def _wait_taken(modem) -> None:
    modem.emulator.wait_received(modem.port, modem.host.written)


POINTS = ["no_cr", "prompt", "mid_data", "after_esc", "after_ctrl_z_unread", "after_answer"]


@pytest.mark.parametrize("point", POINTS)
def test_power_cut_at_every_point_of_a_secwrite_leaves_every_slot_all_or_nothing(modem, point, tmp_path):
    ca, crt, key = _material()
    assert modem.secwrite(1, crt) == written(crt)
    assert modem.secwrite(2, key) == written(key)
    if point == "no_cr":
        modem.host.write(b"AT+QSECWRITE=0")
    else:
        modem.prompt("AT+QSECWRITE=0")
        if point == "mid_data":
            modem.host.write(ca[: len(ca) // 2])
        elif point == "after_esc":
            modem.host.write(ca + ESC)
        elif point == "after_ctrl_z_unread":
            modem.host.write(ca + CTRL_Z)
        elif point == "after_answer":
            assert modem.host.write(ca + CTRL_Z) is None
            assert modem.host.read_until(DONE, 20) == written(ca)
    _wait_taken(modem)
    _reboot(modem)
    # the cut prompt / answer never reaches the next host
    assert modem.host.quiet_for(0.3) == b""
    slot0 = modem.at("AT+QSECREAD=0")
    if point in ("after_answer",):
        assert slot0 == read_ok(ca)
    elif point == "after_ctrl_z_unread":
        assert slot0 in (read_ok(ca), CME22), slot0      # atomic: all or nothing
    else:
        assert slot0 == CME22, slot0
    assert modem.at("AT+QSECREAD=1") == read_ok(crt)
    assert modem.at("AT+QSECREAD=2") == read_ok(key)
    # the state directory: no temporary file left behind, slot0.bin only if slot 0 is filled
    files = sorted(p.name for p in (tmp_path / "state-0" / "secstore").iterdir())
    assert not [f for f in files if f.startswith(TEMP_PREFIX)], files
    assert ("slot0.bin" in files) == (slot0 != CME22), files
    # the module is usable: a (re)write of slot 0 behaves as its read said
    if slot0 == CME22:
        assert modem.secwrite(0, ca) == written(ca)
    else:
        assert modem.at("AT+QSECWRITE=0") == CME3
    assert modem.at("AT+QSECREAD=0") == read_ok(ca)
    modem.alive()


def test_a_delete_answered_ok_survives_a_power_cut_and_so_does_the_rewrite(modem):
    ca, crt, _key = _material()
    assert modem.secwrite(0, ca) == written(ca)
    assert modem.at("AT+QSECDEL=0") == OK
    _reboot(modem)
    assert modem.at("AT+QSECREAD=0") == CME22
    assert modem.secwrite(0, crt) == written(crt)
    _reboot(modem)
    assert modem.at("AT+QSECREAD=0") == read_ok(crt)
    # delete pipelined with the power cut right behind it (the OK taken, never read)
    modem.host.write(b"AT+QSECDEL=0\r\n")
    modem.host.read_until(OK, 10)
    _reboot(modem)
    assert modem.at("AT+QSECREAD=0") == CME22
    modem.alive()


def test_four_secwrite_prompts_and_three_reads_pipelined_in_one_write(modem):
    ca, crt, _key = _material()
    big = b"B" * 16385
    blob = (b"AT+QSECWRITE=0\r\n" + ca + CTRL_Z
            + b"AT+QSECWRITE=1\r\n" + crt + CTRL_Z
            + b"AT+QSECWRITE=2\r\n" + big + CTRL_Z
            + b"AT+QSECWRITE=0\r\n"
            + b"AT+QSECREAD=0\r\nAT+QSECREAD=1\r\nAT+QSECREAD=2\r\n")
    modem.host.write(blob)
    expected = (PROMPT + written(ca)
                + PROMPT + written(crt)
                + PROMPT + CME20
                + CME3
                + read_ok(ca) + read_ok(crt) + CME22)
    got = modem.host.read_until(CME22, 20)
    got += modem.host.quiet_for(0.3)
    assert got == expected
    modem.alive()


def test_cfun_1_1_right_behind_the_ctrl_z_of_an_upload(modem):
    ca, crt, key = _material()
    assert modem.secwrite(2, key) == written(key)
    modem.prompt("AT+QSECWRITE=1")
    modem.host.write(crt + CTRL_Z + b"AT+CFUN=1,1\r\n")
    got = modem.host.read_until(CPIN, 20)
    assert got == written(crt) + OK + CPIN, got
    modem.host.quiet_for(0.2)
    assert modem.at("ATE0").endswith(OK)
    assert modem.at("AT+QSECREAD=0") == CME22
    assert modem.at("AT+QSECREAD=1") == read_ok(crt)
    assert modem.at("AT+QSECREAD=2") == read_ok(key)
    modem.alive()


def _xor(data: bytes) -> str:
    return checksum(data)


def test_checksum_is_over_exactly_the_data_not_an_off_by_one_range(modem):
    # craft data whose checksum differs from every off-by-one range a careless host (or
    # module) might use: without the first / last byte, with the terminator, shifted by one.
    base = bytes(range(0x20, 0x7f)) * 3
    data = b"\x01" + base + b"\x7e\x03"
    ranges = {
        "manual": data,
        "no_first": data[1:],
        "no_last": data[:-1],
        "with_ctrl_z": data + CTRL_Z,
        "shifted": data[1:] + CTRL_Z,
        "with_crlf": b"\r\n" + data,
    }
    values = {k: _xor(v) for k, v in ranges.items()}
    assert len(set(values.values())) == len(values), values
    assert modem.secwrite(0, data) == written(data)
    assert modem.at("AT+QSECREAD=0") == read_ok(data)
    # the same with odd length: §2.2 pads the last byte as the HIGH byte of a word
    odd = data[:-1]
    assert len(odd) % 2 == 1
    assert modem.secwrite(1, odd) == written(odd)
    assert modem.at("AT+QSECREAD=1") == read_ok(odd)
    modem.alive()


@pytest.mark.parametrize("how", ["over_then_ctrl_z", "over_then_esc", "exact"])
def test_echoing_host_types_send_data_byte_by_byte_at_and_past_1460(modem, how):
    srv = modem.server(mode="sink")
    modem.open(0)
    conn = conn_of(srv)
    assert modem.at("ATE1") == OK          # echoed from the next line on
    modem.host.write(b"AT+QSSLSEND=0\r")
    assert modem.host.read_until(PROMPT, 10) == b"AT+QSSLSEND=0\r" + PROMPT
    n = 1460 if how == "exact" else 1461
    data = bytes((0x30 + i % 40) for i in range(n))
    # byte by byte, in blocks of single-byte writes
    for b in data:
        modem.host.write(bytes([b]))
    end = ESC if how == "over_then_esc" else CTRL_Z
    modem.host.write(end)
    got = modem.host.read_until(re.compile(rb"\r\n(SEND OK|OK|ERROR)\r\n"), 20)
    assert got.startswith(data), got[:80]
    tail = got[len(data):]
    if how == "exact":
        assert tail == b"\r\nSEND OK\r\n", tail        # Ctrl+Z / ESC are never echoed
        assert wait_received(conn, 1460) == data
    elif how == "over_then_esc":
        assert tail == OK, tail
    else:
        assert tail == ERROR, tail
    assert modem.host.quiet_for(0.3) == b""
    ate0 = modem.at("ATE0")
    assert ate0.startswith(b"ATE0\r") and ate0.endswith(OK), ate0
    if how != "exact":
        assert bytes(conn.received) == b""
    else:
        assert bytes(conn.received) == data
    modem.alive()


def test_sends_pipelined_with_cfun_1_1_behind_them_arrive_once_before_the_restart(modem):
    """docs/behaviour.md: a connection ended by the host's restart (AT+CFUN=1,1) sends the bytes
    its SEND OK took first.  Three sockets, one write: three prompts with their data and Ctrl+Z,
    then AT+CFUN=1,1."""
    servers = [modem.server(mode="sink", name=f"s{i}.example") for i in range(3)]
    for i in range(3):
        modem.open(i, name=f"s{i}.example")
    conns = [conn_of(srv) for srv in servers]
    payloads = [bytes((0x41 + i + k % 20) for k in range(1460)) for i in range(3)]
    blob = b"".join(b"AT+QSSLSEND=%d\r\n" % i + p + CTRL_Z for i, p in enumerate(payloads))
    modem.host.write(blob + b"AT+CFUN=1,1\r\n")
    got = modem.host.read_until(CPIN, 20)
    assert got == (PROMPT + b"\r\nSEND OK\r\n") * 3 + OK + CPIN, got
    for conn, p in zip(conns, payloads):
        assert wait_received(conn, len(p)) == p
        assert conn.done.wait(10)
        assert bytes(conn.received) == p
    modem.host.quiet_for(0.3)
    assert modem.at("ATE0").endswith(OK)
    # PDP down after the restart, every socket dropped without a URC and forgotten
    assert modem.at("AT+QSSLSTATE") == qsslstate("IP INITIAL", *["INITIAL"] * 6)
    modem.alive()


@pytest.mark.parametrize("cut", ["power", "hangup"])
@pytest.mark.parametrize("command", ["QSECWRITE", "QSECDEL"])
def test_delayed_store_answer_cut_by_a_power_cut_or_a_hangup(modem, command, cut):
    """A `slow` fault holds the store command's answer 1.5 s.  A power cut in that time: the
    answer is never written, the slot is all or nothing.  A hang-up in that time: the command
    ran (docs: its work is done, its answer is not written to the next host), so the next host
    reads the slot as the command left it and never an OK it did not ask for."""
    ca, crt, _key = _material()
    assert modem.secwrite(1, crt) == written(crt)
    if command == "QSECDEL":
        assert modem.secwrite(0, ca) == written(ca)
    assert modem.emulator.control("slow", command=f"+{command}", ms=1500)["ok"]
    if command == "QSECWRITE":
        modem.prompt("AT+QSECWRITE=0")
        modem.host.write(ca + CTRL_Z)
    else:
        modem.host.write(b"AT+QSECDEL=0\r\n")
    _wait_taken(modem)
    assert modem.host.quiet_for(0.3) == b""                 # the answer is held
    if cut == "power":
        _reboot(modem)
    else:
        modem.host.close()
        wait_for(lambda: not modem.port.port.attached, 10, "the modem to see the hang-up")
        modem.host = Host(modem.port.path)
        modem.emulator.run(modem.port.port.look_for_host)
        assert modem.host.quiet_for(1.8) == b""             # the held answer is not ours
    slot0 = modem.at("AT+QSECREAD=0")
    if cut == "hangup":
        assert slot0 == (read_ok(ca) if command == "QSECWRITE" else CME22), slot0
    else:
        assert slot0 in (read_ok(ca), CME22), slot0
    assert modem.at("AT+QSECREAD=1") == read_ok(crt)
    assert modem.host.quiet_for(1.8) == b""
    modem.alive()


RECV_URC = b'\r\n+QSSLURC: "recv",1,0\r\n'
ANSWER = re.compile(rb"\r\n\+QSSLRECV: ([0-9.]+):(\d+),TCP,(\d+)\r\n|\r\n(OK|ERROR)\r\n")


def test_recv_at_every_length_edge_while_the_server_trickles(modem):
    """§2.8 while data arrive: the server writes 400 records of 5 bytes 3 ms apart; the host reads
    without pause with <length> 1, 1500, 0, 1501, 7, 2 in turn (0 and 1501 ERROR every time).
    Everything comes back once, in order, never inside an answer a URC; a "recv" URC comes
    before the data read after each bare OK (docs: data arriving into an empty buffer)."""
    import time as _time
    chunks = [(b"%05d" % i)[-5:] for i in range(400)]
    sent = b"".join(chunks)

    def trickle(conn):
        for c in chunks:
            conn.sendall(c)
            _time.sleep(0.003)
        _time.sleep(1)

    modem.server(handler=trickle)
    modem.open(0)
    got = bytearray()
    lengths = [1, 1500, 0, 1501, 7, 2]
    urcs = empties = 0
    urc_since_empty = True
    deadline = _time.monotonic() + 15
    i = 0
    while len(got) < len(sent):
        assert _time.monotonic() < deadline, (len(got), len(sent))
        n = lengths[i % len(lengths)]
        i += 1
        modem.host.write(b"AT+QSSLRECV=1,0,%d\r" % n)
        block = modem.host.read_until(ANSWER, 10)
        m = ANSWER.search(block)
        pre = block[:m.start()]
        k = pre.count(RECV_URC)
        assert pre == RECV_URC * k, block
        urcs += k
        urc_since_empty = urc_since_empty or k > 0
        if n in (0, 1501):
            assert m.group(4) == b"ERROR", block
            continue
        if m.group(4) == b"OK":
            empties += 1
            urc_since_empty = False
            continue
        assert m.group(4) is None, block
        size = int(m.group(3))
        assert 1 <= size <= n, block
        data = modem.host.read_exactly(size, 10)
        assert modem.host.read_exactly(8, 10) == b"\r\n\r\nOK\r\n"
        if not urc_since_empty:
            # the URC of the arrival into the empty buffer follows this answer at the latest
            assert modem.host.read_until(RECV_URC, 5) == RECV_URC
            urcs += 1
            urc_since_empty = True
        got += data
    assert bytes(got) == sent
    assert 1 <= urcs <= len(chunks)         # one per arrival into an empty buffer at most
    tail = modem.host.quiet_for(0.3)
    assert tail in (b"", RECV_URC), tail
    assert modem.at("AT+QSSLRECV=1,0,1500") == OK
    assert modem.host.quiet_for(0.2) == b""
    modem.close(0)
    modem.alive()


@pytest.mark.parametrize("s5", [8, 45, 127])
def test_backspace_character_s5_is_plain_data_in_both_prompts(modem, s5):
    """S5 edits command lines only: at the AT+QSECWRITE and AT+QSSLSEND prompts a byte equal to
    S5 (the default BS, '-' that every PEM is full of, DEL) is data, stored / sent verbatim; the
    §2.2 checksum is that of every byte typed.  Echo on, so the echo is checked too."""
    ca, _crt, _key = _material()
    srv = modem.server(mode="sink")
    modem.open(0)
    conn = conn_of(srv)
    assert modem.at(f"ATS5={s5}") == OK
    data = ca + bytes([s5]) * 3 + b"tail" + bytes([8, 127])
    assert modem.secwrite(0, data) == written(data)
    assert modem.at("AT+QSECREAD=0") == read_ok(data)
    payload = b"ab" + bytes([s5]) * 2 + b"cd-" + bytes([8, 127]) + b"ef"
    assert modem.send(0, payload) == b"\r\nSEND OK\r\n"
    assert wait_received(conn, len(payload)) == payload
    assert modem.at("ATE1") == OK
    modem.host.write(b"AT+QSSLSEND=0\r")
    assert modem.host.read_until(PROMPT, 10) == b"AT+QSSLSEND=0\r" + PROMPT
    for b in payload:
        modem.host.write(bytes([b]))
    modem.host.write(CTRL_Z)
    assert modem.host.read_until(b"SEND OK\r\n", 10) == payload + b"\r\nSEND OK\r\n"
    assert wait_received(conn, 2 * len(payload)) == payload * 2
    modem.host.write(b"ATE0\r")
    assert modem.host.read_until(OK, 10) == b"ATE0\r" + OK
    assert modem.at("ATS5=8") == OK
    modem.alive()


def test_power_cut_during_a_lingering_close_answers_nothing_and_runs_nothing_behind_it(modem):
    """AT+QSSLCLOSE to a server that never answers close_notify: the close lingers (docs: the
    port is busy, 10 s).  The host pipelined AT+QSSLSTATE and AT+QSECDEL=1 behind it; the power
    goes: neither OK nor "0,CLOSE OK" is ever written, the pipelined lines never run (slot 1
    still filled), the restarted module shows every socket INITIAL."""
    import threading
    hold = threading.Event()
    _ca, crt, _key = _material()
    assert modem.secwrite(1, crt) == written(crt)
    modem.server(handler=lambda conn: hold.wait(15))
    try:
        modem.open(0)
        modem.host.write(b"AT+QSSLCLOSE=0\rAT+QSSLSTATE\rAT+QSECDEL=1\r")
        _wait_taken(modem)
        assert modem.host.quiet_for(0.5) == b""             # lingering: the port is busy
        assert modem.emulator.control("reboot", ms=0) == {"ok": True}
        got = modem.host.read_until(CPIN, 20)
        assert got == CPIN, got
        assert modem.host.quiet_for(0.5) == b""
        assert modem.at("ATE0").endswith(OK)
        assert modem.at("AT+QSECREAD=1") == read_ok(crt)
        assert modem.at("AT+QSSLSTATE") == qsslstate("IP INITIAL", *["INITIAL"] * 6)
        modem.alive()
    finally:
        hold.set()
