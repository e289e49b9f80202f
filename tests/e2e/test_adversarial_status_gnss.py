"""Adversarial tests of the status and GNSS commands (emulator/commands/status.py,
emulator/commands/gnss.py, emulator/modem/packet_events.py), the way independent testers and
real hosts attack them:

* AT+QENG="servingcell"/"neighbourcell", AT+CEER, AT+CGEREP, AT+QGPS, AT+QGPSEND,
  AT+QGPSLOC, AT+QGPSCFG in every form (=?, ?, =args, exec) with hostile arguments: empty,
  extra commas, quotes missing or left open, out of range, 14-digit numbers, signs, leading
  zeros, over-long strings; under ATV0, ATQ1, AT+CMEE=0/1/2; chained with ';' (exactly one
  final result a line, the first error ends it).
* Line endings CR and CR LF, written one byte at a time, answers read in odd-sized chunks;
  the port closed mid-line and at a data prompt, then reopened.
* +CGEV URCs (AT+CGEREP=1/2, and the 32-code buffer of mode 0 with <bfr> 1) raised by the
  host (AT+QIACT/QIDEACT, AT+CGACT, AT+CGATT, AT+COPS=2, AT+CFUN=0/4/1, AT+CFUN=1,1) and by
  the network (control API pdp_deact / register) while the host is typing a command, sits at
  an AT+QISEND / AT+QSSLSEND '> ' prompt, is online in transparent mode (AT+QIOPEN access mode
  2) or in an AT+QFUPL CONNECT upload: never inside data, never splitting an answer, held or
  dropped as docs/behaviour.md says, in the order the events happened.
* GNSS: 505 / 504 / 516 at the right moments, the fix time and date from the modem clock
  across a date change, every AT+QGPSLOC mode byte for byte, AT+CFUN=0/4 with GNSS on,
  restarts (AT+CFUN=1,1, AT+QPOWD, the control API's reboot) cancelling a pending fix, a
  <fixcount> timer of an ended session, AT+QGPSCFG's items kept across a restart.
* The ML302 profile: ERROR for every command it lacks, whatever AT+CMEE says.
* Invariants: no traceback and no ERROR-level log record, the modem answers AT afterwards.

The one bug found here is fixed (its test says what it was)."""
from __future__ import annotations

import re
import time

import pytest

from emulator.storage.checksum import xor16
from emulator.testing.peers import TcpServer, TlsServer
from tests.e2e.socket_support import TCP_HOST, TCP_PORT, escape

OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"
SERVING = ('+QENG: "servingcell","{state}","LTE","FDD",460,01,8A21B03,226,1650,3,5,5,D5D5,'
           '-94,-9,-65,8,30')
NEIGHBOURS = ('+QENG: "neighbourcell intra","LTE",1650,311,-18,-103,-65,-20,21,5,14,6,62',
              '+QENG: "neighbourcell inter","LTE",100,37,-13,-101,-68,-20,23,3,8,10')
REST = "0.9,12.5,3,0.00,0.0,0.0"
POSITION = {0: "3107.4070N,12132.5926E", 1: "3107.407000,N,12132.592600,E", 2: "31.12345,121.54321"}
FINALS = re.compile(rb"\r\n(OK|ERROR|\+CME ERROR: [^\r\n]*|NO CARRIER|CONNECT)\r\n")
BOOT_DONE = b"+QIND: PB DONE\r\n"


def answer(*lines: str) -> bytes:
    return b"\r\n" + "\r\n".join(lines).encode() + b"\r\n" + OK


def urcs(*lines: str) -> bytes:
    return b"".join(b"\r\n" + line.encode() + b"\r\n" for line in lines)


def cme(code) -> bytes:
    return f"\r\n+CME ERROR: {code}\r\n".encode()


def serving(state: str = "NOCONN") -> str:
    return SERVING.format(state=state)


def finals(data: bytes) -> int:
    return len(FINALS.findall(data))


def alive(host) -> None:
    """The modem still answers a bare AT with OK (ATE0, ATV1), and nothing else is pending."""
    assert host.at("AT") == OK


def trickle(host, emulator, port, data: bytes) -> None:
    """Write one byte at a time, each read by the modem before the next (a driver that
    flush()es per byte)."""
    for b in data:
        host.write(bytes([b]))
        emulator.wait_received(port, host.written)


def read_chunked(host, pattern: bytes, size: int, timeout: float = 5) -> bytes:
    """Read in `size`-byte pieces (a host with a small read buffer) until `pattern` has come;
    returns all of it (nothing is left pending)."""
    assert not host.pending
    got = bytearray()
    deadline = time.monotonic() + timeout
    while pattern not in got:
        if time.monotonic() > deadline:
            raise AssertionError(f"never saw {pattern!r}; got {bytes(got)!r}")
        got += host.ser.read(size)
    host.transcript += got
    return bytes(got)


# No log record may carry a traceback or be an error (conftest's strict_log, every test).
pytestmark = pytest.mark.usefixtures("strict_log")


@pytest.fixture
def two_ctx(ec2x_timed):
    """ec2x_timed with AT+CGEREP=2 and contexts 1 and 2 active (their ACT codes read)."""
    host, advance, port = ec2x_timed
    assert host.at('AT+CGEREP=2;+QICSGP=1,1,"UNINET","","",1;+QIACT=1;'
                   '+QICSGP=2,1,"B","","",1;+QIACT=2;+QICFG="transwaittm",0') == OK
    assert host.read_until(b"ACT 2\r\n") == urcs("+CGEV: ME PDN ACT 1", "+CGEV: ME PDN ACT 2")
    return ec2x_timed


def restart_done(host, advance, seconds: float = 2) -> None:
    """After a restart on manual time: the boot URCs, then ATE0 again."""
    advance(seconds)
    host.read_until(BOOT_DONE)
    assert host.at("ATE0") == b"ATE0\r" + OK


# =========================================================================================
# AT+QENG
# =========================================================================================
@pytest.mark.parametrize("line", [
    'AT+QENG="servingcell',                     # quote left open
    'AT+QENG=servingcell"',                     # stray quote
    'AT+QENG=,', 'AT+QENG=,"servingcell"', 'AT+QENG="servingcell",', 'AT+QENG="servingcell",,',
    'AT+QENG="servingcell ",', 'AT+QENG=" servingcell"', 'AT+QENG="serving cell"',
    'AT+QENG="' + "s" * 40 + '"', 'AT+QENG="' + "n" * 1500 + '"',
    'AT+QENG=0', 'AT+QENG=-1', 'AT+QENG=99999999999999', 'AT+QENG="servingcell"x',
    'AT+QENG="neighbourcell","servingcell"', 'AT+QENG?=', 'AT+QENG=?,', 'AT+QENGX="servingcell"',
])
def test_qeng_hostile_arguments_are_plain_error_even_with_verbose_errors(ec2x_timed, line):
    host, _, _ = ec2x_timed
    assert host.at("AT+CMEE=2") == OK
    assert host.at(line) == ERROR
    assert host.at('AT+QENG="servingcell"') == answer(serving())


def test_qeng_under_atv0_atq1_and_in_chains(ec2x_timed):
    host, _, _ = ec2x_timed
    # one line, three commands: their texts in order and one OK
    assert host.at('AT+QENG="servingcell";+QENG=neighbourcell;+CEER') == (
        f"\r\n{serving()}\r\n" + "\r\n" + "\r\n".join(NEIGHBOURS) + "\r\n"
        + '\r\n+CEER: "No cause information available"\r\n').encode() + OK
    # the first error ends the line: the CEER after it never runs
    got = host.at('AT+QENG="servingcell";+QENG="bogus";+CEER')
    assert got.endswith(ERROR) and b"+CEER" not in got and finals(got) == 1, got
    host.write('ATV0\r')
    assert host.read_until(b"0\r") == b"0\r"
    host.write('AT+QENG="neighbourcell"\r')
    assert host.read_until(b"\n0\r") == ("\r\n".join(NEIGHBOURS) + "\r\n0\r").encode()
    host.write('AT+QENG="x"\r')
    assert host.read_until(b"4\r") == b"4\r"
    host.write("ATV1;Q1\r")
    host.write('AT+QENG="servingcell"\r')
    assert host.read_until(b"30\r\n") == f"\r\n{serving()}\r\n".encode()
    host.write('AT+QENG="x"\r')                   # no result code at all, not even ERROR
    host.write("ATQ0\r")
    assert host.read_until(OK) == OK
    alive(host)


def test_qeng_is_search_with_the_radio_off_even_where_the_network_denies(ec2x_timed, emulator):
    host, advance, _ = ec2x_timed
    assert emulator.control("register", stat=3) == {"ok": True}
    host.quiet_for(0.05)
    assert host.at('AT+QENG="servingcell"') == answer(serving("LIMSRV"))
    assert host.at('AT+QENG="neighbourcell"') == answer(*NEIGHBOURS)
    assert host.at("AT+CFUN=4") == OK
    assert host.at('AT+QENG="servingcell";+QENG="neighbourcell"') == answer('+QENG: "servingcell","SEARCH"')
    assert host.at("AT+CFUN=0;+CFUN=1") == OK
    assert host.at('AT+QENG="servingcell"') == answer('+QENG: "servingcell","SEARCH"')   # (SIM busy)
    advance(0.5)
    host.read_until(b"+QIND: PB DONE\r\n")                 # the SIM AT+CFUN=0 switched off is read
    assert host.at('AT+QENG="servingcell"') == answer(serving("LIMSRV"))
    assert emulator.control("register", stat=1) == {"ok": True}
    host.quiet_for(0.05)
    assert host.at('AT+QENG="servingcell"') == answer(serving())


@pytest.mark.parametrize("eol", [b"\r", b"\r\n"])
def test_qeng_written_byte_by_byte_with_echo_and_read_in_odd_chunks(open_modem, emulator, eol):
    host, port = open_modem("ec2x", echo=True)
    assert host.at("AT").endswith(OK)
    host.quiet_for(0.05)
    line = b'at+qeng="ServingCell"'
    trickle(host, emulator, port, line + eol)
    got = read_chunked(host, b"OK\r\n", 7)
    assert got == line + b"\r" + answer(serving())       # the LF of CR LF is never echoed
    trickle(host, emulator, port, b"AT+QENG=?" + eol)
    assert read_chunked(host, b"OK\r\n", 3) == b"AT+QENG=?\r" + answer('+QENG: ("servingcell","neighbourcell")')
    assert host.quiet_for(0.1) == b""                     # no stray LF echoed late


# =========================================================================================
# AT+CEER
# =========================================================================================
@pytest.mark.parametrize("line", ["AT+CEER=", "AT+CEER=1", "AT+CEER=0", "AT+CEER?", "AT+CEER=,",
                                  'AT+CEER="x"', "AT+CEER=?1", "AT+CEER=-1", "AT+CEERX"])
def test_ceer_hostile_forms(ec2x_timed, line):
    host, _, _ = ec2x_timed
    assert host.at("AT+CMEE=2") == OK
    assert host.at(line) == ERROR
    assert host.at("AT+CEER=?;+CEER;+CEER") == urcs(*['+CEER: "No cause information available"'] * 2) + OK


def test_ceer_causes_of_cops_cgatt_and_cfun_paths(ec2x_timed):
    host, advance, _ = ec2x_timed
    ceer = lambda text: answer(f'+CEER: "{text}"')                     # noqa: E731
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1') == OK
    assert host.at("AT+COPS=2") == OK                                  # deregistered by the host
    assert host.at("AT+QIACT=1") == ERROR
    assert host.at("AT+CEER") == ceer("No service available")
    assert host.at("AT+COPS=0") == OK
    assert host.at("AT+CFUN=0") == OK
    assert host.at("AT+CGACT=1,1") == ERROR
    assert host.at("AT+CEER") == ceer("Phone is offline")
    assert host.at("AT+CFUN=1;+CGATT=0;+CGACT=0,1;+QIDEACT=1") == OK     # nothing active: no cause
    assert host.at("AT+CEER") == ceer("Phone is offline")
    advance(0.5)
    host.read_until(b"+QIND: PB DONE\r\n")                 # the SIM AT+CFUN=0 switched off is read
    assert host.at("AT+CGATT=1;+QIACT=1") == OK                          # a success keeps it too
    assert host.at("AT+CEER") == ceer("Phone is offline")
    assert host.at("AT+CFUN=4") == OK                                    # an active context lost
    assert host.at("AT+CEER") == ceer("Regular deactivation")
    assert host.at("AT+CFUN=1") == OK
    alive(host)


# =========================================================================================
# AT+CGEREP and the +CGEV URCs
# =========================================================================================
@pytest.mark.parametrize("line", ["AT+CGEREP=1,,", "AT+CGEREP=2,1,", 'AT+CGEREP=1,"1"', "AT+CGEREP=1,-1",
                                  "AT+CGEREP=+1", "AT+CGEREP=99999999999999", "AT+CGEREP=1,99999999999999",
                                  "AT+CGEREP=1 1", "AT+CGEREP=1,0,0,0", 'AT+CGEREP="', "AT+CGEREP=?,",
                                  "AT+CGEREP?1", "AT+CGEREP=" + "1" * 3000])
def test_cgerep_hostile_arguments_change_nothing(ec2x_timed, line):
    host, _, _ = ec2x_timed
    assert host.at("AT+CGEREP=2,1;+CMEE=2") == OK
    assert host.at(line) == ERROR
    assert host.at("AT+CGEREP?") == answer("+CGEREP: 2,1")


def test_cgerep_mode_0_keeps_exactly_the_newest_32_codes(ec2x_timed):
    host, _, _ = ec2x_timed
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1') == OK
    for i in range(20):                                          # 40 codes, mode 0
        assert host.at("AT+QIACT=1;+QIDEACT=1") == OK, i
    assert host.at("AT+CGEREP=1,1") == OK
    got = host.quiet_for(0.3)
    assert got == urcs(*["+CGEV: ME PDN ACT 1", "+CGEV: ME PDN DEACT 1"] * 16)
    assert host.at("AT+CGEREP=0;+CGEREP=2,1") == OK               # written once, then gone
    assert host.quiet_for(0.1) == b""


# Was a bug, fixed: the ACT code (mode 2) waited in the interpreter's URC queue while the line
# ran, the DEACT code kept by mode 0 came back as AT+CGEREP's trailing lines, and
# Interpreter._write_after wrote those at once, before the older queued URCs: the host's last
# word was 'ACT 1' for a context that is down.  Trailing lines now go behind the URCs raised
# before their command ran.
def test_cgev_codes_of_one_line_come_in_the_order_of_the_events(ec2x_timed):
    host, _, _ = ec2x_timed
    assert host.at('AT+CGEREP=2;+QICSGP=1,1,"UNINET","","",1') == OK
    assert host.at("AT+QIACT=1;+CGEREP=0;+QIDEACT=1;+CGEREP=2,1") == OK
    got = host.quiet_for(0.3)
    assert got == urcs("+CGEV: ME PDN ACT 1", "+CGEV: ME PDN DEACT 1")


@pytest.mark.parametrize("eol", [b"\r", b"\r\n"])
def test_cgev_while_the_host_types_a_command_byte_by_byte(open_modem, emulator, eol):
    """A URC may come between the bytes of a half-typed line (the module writes it at once),
    but as whole lines, and the line still runs as typed."""
    host, port = open_modem("ec2x", echo=True)
    assert host.at('AT+CGEREP=2;+QICSGP=1,1,"UNINET","","",1;+QIACT=1').endswith(OK)
    host.read_until(b"ACT 1\r\n")
    host.quiet_for(0.05)
    trickle(host, emulator, port, b"AT+CE")
    assert emulator.control("pdp_deact", cid=1) == {"ok": True}
    trickle(host, emulator, port, b"ER" + eol)
    got = read_chunked(host, b"OK\r\n", 5)
    assert got == (b"AT+CE" + urcs("+CGEV: NW PDN DEACT 1", '+QIURC: "pdpdeact",1') + b"ER\r"
                   + answer('+CEER: "Regular deactivation"'))
    assert host.quiet_for(0.1) == b""


@pytest.mark.parametrize("mode", [1, 2])
def test_cgev_waits_for_the_end_of_a_qisend_prompt_and_never_enters_the_data(open_modem, emulator, mode):
    with TcpServer("sink") as sink:
        emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", sink.port)
        host, port = open_modem("ec2x", manual_time=True)
        assert host.at(f'AT+CGEREP={mode};+QICSGP=1,1,"UNINET","","",1;+QIACT=1;'
                       '+QICSGP=2,1,"B","","",1;+QIACT=2') == OK
        assert host.read_until(b"ACT 2\r\n") == urcs("+CGEV: ME PDN ACT 1", "+CGEV: ME PDN ACT 2")
        assert host.at(f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,0') == OK
        assert host.read_until(b"+QIOPEN: 0,0\r\n") == urcs("+QIOPEN: 0,0")
        data = b"\r\n+CGEV: X\r\nAT\r\n\x1a"                 # looks like framing, is data
        host.write(f"AT+QISEND=0,{len(data) * 2}\r")
        assert host.read_until(b"> ") == b"\r\n> "
        trickle(host, emulator, port, data)
        assert emulator.control("pdp_deact", cid=2) == {"ok": True}     # not the socket's context
        assert host.quiet_for(0.15) == b""                              # nothing inside the prompt
        trickle(host, emulator, port, data)
        got = host.read_until(b'"pdpdeact",2\r\n')
        assert got == b"\r\nSEND OK\r\n" + urcs("+CGEV: NW PDN DEACT 2", '+QIURC: "pdpdeact",2')
        assert sink.wait_connection().wait_received(len(data) * 2) == data * 2
        alive(host)


def test_cgev_waits_for_the_end_of_a_qsslsend_prompt(two_ctx, emulator, pki):
    host, _, port = two_ctx
    with TlsServer(pki.server, mode="echo") as server:
        emulator.router.add_map("echo.example", 443, "127.0.0.1", server.address[1])
        assert host.at('AT+QSSLOPEN=1,1,0,"echo.example",443') == OK
        assert host.read_until(b"+QSSLOPEN: 0,0\r\n") == urcs("+QSSLOPEN: 0,0")
        host.write("AT+QSSLSEND=0,8\r")
        assert host.read_until(b"> ") == b"\r\n> "
        trickle(host, emulator, port, b"ab\r\n")
        assert emulator.control("pdp_deact", cid=2) == {"ok": True}
        assert host.quiet_for(0.15) == b""
        trickle(host, emulator, port, b"cd\r\n")
        assert host.read_until(b'"pdpdeact",2\r\n') == \
            b"\r\nSEND OK\r\n" + urcs("+CGEV: NW PDN DEACT 2", '+QIURC: "pdpdeact",2')
        assert host.read_until(b'"recv",0\r\n') == urcs('+QSSLURC: "recv",0')
        assert host.at("AT+QSSLRECV=0,100") == b"\r\n+QSSLRECV: 8\r\nab\r\ncd\r\n\r\n\r\nOK\r\n"
        assert host.at("AT+QSSLCLOSE=0") == OK
    alive(host)


def test_cgev_waits_for_the_end_of_a_qfupl_upload(two_ctx, emulator):
    host, _, port = two_ctx
    data = b"\r\n+CGEV: ME DETACH\r\nAT+QFDEL=\"*\"\r\n\x00\x1a+\r\n" * 2
    host.write(f'AT+QFUPL="cgev.bin",{len(data)}\r')
    assert host.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
    half = len(data) // 2
    host.write(data[:half])
    emulator.wait_received(port, host.written)
    assert emulator.control("pdp_deact", cid=1) == {"ok": True}
    assert emulator.control("register", stat=0) == {"ok": True}     # and the network detaches
    assert host.quiet_for(0.15) == b""
    host.write(data[half:])
    got = host.read_until(b"NW DETACH\r\n")
    assert got == (f"\r\n+QFUPL: {len(data)},{xor16(data):x}\r\n".encode() + OK
                   + urcs("+CGEV: NW PDN DEACT 1", '+QIURC: "pdpdeact",1',
                          "+CGEV: NW PDN DEACT 2", '+QIURC: "pdpdeact",2', "+CGEV: NW DETACH"))
    host.write('AT+QFDWL="cgev.bin"\r')
    assert host.read_until(OK) == (b"\r\nCONNECT\r\n" + data
                                   + f"\r\n+QFDWL: {len(data)},{xor16(data):x}\r\n".encode() + OK)
    assert emulator.control("register", stat=1) == {"ok": True}
    host.quiet_for(0.05)
    alive(host)


def test_cgev_mode_2_in_transparent_mode_comes_after_the_escape_never_in_the_data(two_ctx, emulator, tcp_echo):
    host, advance, port = two_ctx
    host.write(f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,2\r')
    assert host.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
    host.write(b"first\r\n")
    assert host.read_exactly(7) == b"first\r\n"
    assert emulator.control("pdp_deact", cid=2) == {"ok": True}
    host.write(b"second\r\n")
    assert host.read_exactly(8) == b"second\r\n"          # the echo, and nothing else
    assert host.quiet_for(0.1) == b""
    assert escape(host, advance) == OK
    assert host.read_until(b'"pdpdeact",2\r\n') == urcs("+CGEV: NW PDN DEACT 2", '+QIURC: "pdpdeact",2')
    # back online, then the network takes the link's own context: NO CARRIER first
    assert host.at("ATO") == b"\r\nCONNECT\r\n"
    assert emulator.control("pdp_deact", cid=1) == {"ok": True}
    assert host.read_until(b'"pdpdeact",1\r\n') == (b"\r\nNO CARRIER\r\n"
                                                    + urcs("+CGEV: NW PDN DEACT 1", '+QIURC: "pdpdeact",1'))
    assert host.at("AT+QICLOSE=0") == OK
    alive(host)


def test_cgev_mode_1_drops_the_codes_of_online_mode_for_good(open_modem, emulator, tcp_echo):
    host, port = open_modem("ec2x", manual_time=True)
    advance = emulator.advancer(port, host)
    assert host.at('AT+CGEREP=1;+QICSGP=1,1,"UNINET","","",1;+QIACT=1;+QICSGP=2,1,"B","","",1;'
                   '+QIACT=2;+QICFG="transwaittm",0') == OK
    host.read_until(b"ACT 2\r\n")
    host.write(f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,2\r')
    assert host.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
    assert emulator.control("pdp_deact", cid=2) == {"ok": True}
    assert escape(host, advance) == OK
    assert host.read_until(b'"pdpdeact",2\r\n') == urcs('+QIURC: "pdpdeact",2')
    # in command mode after "+++" the link is no longer reserved: written at once
    assert host.at("AT+QIACT=2") == OK
    assert host.read_until(b"ACT 2\r\n") == urcs("+CGEV: ME PDN ACT 2")
    # a dropped code was not kept for a later <bfr> 1
    assert host.at("AT+CGEREP=2,1") == OK
    assert host.quiet_for(0.15) == b""
    assert host.at("AT+QICLOSE=0") == OK
    alive(host)


def test_cgev_atv0_framing_and_cfun_cycle_then_restart(two_ctx, emulator):
    host, advance, _ = two_ctx
    host.write("ATV0\r")
    assert host.read_until(b"0\r") == b"0\r"
    host.write("AT+CFUN=0\r")
    assert host.read_until(b"DETACH\r\n") == (b"0\r+CGEV: ME PDN DEACT 1\r\n+CGEV: ME PDN DEACT 2\r\n"
                                              b"+CGEV: ME DETACH\r\n")
    host.write("AT+CFUN=1;V1\r")                           # nothing comes back up by itself
    assert host.read_until(OK) == OK
    assert host.quiet_for(0.1) == b""
    advance(0.5)                                           # the SIM AT+CFUN=0 switched off is read
    assert host.read_until(b"PB DONE\r\n") == urcs("+CPIN: READY", "+QUSIM: 1", "+QIND: SMS DONE", "+QIND: PB DONE")
    assert host.quiet_for(0.1) == b""
    assert host.at("AT+QIACT=1") == OK
    assert host.read_until(b"ACT 1\r\n") == urcs("+CGEV: ME PDN ACT 1")
    assert host.at("AT+CFUN=1,1") == OK                    # a restart: no +CGEV for what it drops
    advance(2)
    got = host.read_until(BOOT_DONE)
    assert b"+CGEV" not in got and got.startswith(b"\r\nRDY\r\n"), got
    assert host.at("ATE0;+CGEREP?") == b"ATE0;+CGEREP?\r" + answer("+CGEREP: 0,0")
    assert host.at("AT+CGEREP=2,1") == OK                  # nothing kept across it either
    assert host.quiet_for(0.1) == b""
    assert host.at("AT+CEER") == answer('+CEER: "No cause information available"')


def test_port_closed_at_a_qisend_prompt_with_a_held_cgev(open_modem, emulator):
    with TcpServer("sink") as sink:
        emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", sink.port)
        host, port = open_modem("ec2x", manual_time=True)
        assert host.at('AT+CGEREP=2;+QICSGP=1,1,"UNINET","","",1;+QIACT=1;+QICSGP=2,1,"B","","",1;+QIACT=2') == OK
        host.read_until(b"ACT 2\r\n")
        assert host.at(f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,0') == OK
        host.read_until(b"+QIOPEN: 0,0\r\n")
        host.write("AT+QISEND=0,10\r")
        assert host.read_until(b"> ") == b"\r\n> "
        host.write(b"abc")
        emulator.wait_received(port, host.written)
        assert emulator.control("pdp_deact", cid=2) == {"ok": True}
        host.close()
        time.sleep(0.1)
        from emulator.testing.host import Host
        host2 = Host(port.path)
        try:
            emulator.run(port.port.look_for_host)
            assert host2.at("AT") == OK                      # command state, not data
            assert host2.at("AT+QISTATE=1,0").endswith(OK)
            assert host2.at("AT+CGACT?") == answer("+CGACT: 1,1", "+CGACT: 2,0")
            conn = sink.wait_connection()
            time.sleep(0.1)
            assert bytes(conn.received) == b""             # the abandoned prompt sent nothing
        finally:
            host2.close()


def test_port_closed_mid_line_forgets_the_half_typed_command(open_modem, emulator):
    host, port = open_modem("ec2x")
    host.write("AT+QGPS=1")
    emulator.wait_received(port, host.written)
    host.close()
    time.sleep(0.1)
    from emulator.testing.host import Host
    host2 = Host(port.path)
    try:
        emulator.run(port.port.look_for_host)
        assert host2.at("AT+QGPS?") == answer("+QGPS: 0")
    finally:
        host2.close()


def test_ml302_cgev_and_commands_it_lacks(open_modem, emulator):
    host, _ = open_modem("ml302")
    assert host.at("AT+CMEE=2") == OK
    for line in ('AT+QENG="servingcell"', "AT+QENG=?", 'AT+QENG="neighbourcell"', "AT+QGPS=1", "AT+QGPS?",
                 "AT+QGPS=?", "AT+QGPSEND", "AT+QGPSLOC", "AT+QGPSLOC=2", "AT+QGPSLOC=?",
                 'AT+QGPSCFG="outport"', 'AT+QGPSCFG="nmeasrc",1', "AT+QGPSCFG=?"):
        assert host.at(line) == ERROR, line
    assert host.at("AT+CGEREP=1;+QGPS=1;+CGEREP=2") == ERROR       # the first error ends the line
    assert host.at("AT+CGEREP?") == answer("+CGEREP: 1,0")
    assert host.at('AT+CGDCONT=1,"IP","CMNET";+CGACT=1,1') == answer("+CGACT: 1, 1, 10.127.79.43")
    assert host.read_until(b"ACT 1\r\n") == urcs("+CGEV: ME PDN ACT 1")
    assert emulator.control("pdp_deact", cid=1) == {"ok": True}
    assert host.read_until(b"DEACT 1\r\n") == urcs("+CGEV: NW PDN DEACT 1")   # no +QIURC on the ML302
    assert host.at("AT+CGATT=0") == OK
    assert host.read_until(b"DETACH\r\n") == urcs("+CGEV: ME DETACH")
    assert host.at("AT+CEER") == answer('+CEER: "Regular deactivation"')
    alive(host)


# =========================================================================================
# GNSS
# =========================================================================================
def loc_pattern(mode: int, hhmm: str, date: str) -> re.Pattern:
    return re.compile(rb"\+QGPSLOC: " + hhmm.encode() + rb"(\d\d)\.000," + re.escape(
        f"{POSITION[mode]},{REST},{date},09".encode()))


def seconds_ok(m) -> bool:
    return int(m[1]) < 10                                  # a few real seconds after the set time


@pytest.mark.parametrize("line", [
    "AT+QGPS=-1", "AT+QGPS=-0", "AT+QGPS=+1", "AT+QGPS=1,-1", "AT+QGPS=1,99999999999999",
    "AT+QGPS=99999999999999", "AT+QGPS=1,,,,,", "AT+QGPS=1,30,50,0,1,", "AT+QGPS=,", "AT+QGPS=,1",
    "AT+QGPS=1a", "AT+QGPS=1,30,50,-1", "AT+QGPS=1,30,50,0,-1", 'AT+QGPS=1,"30"',
    "AT+QGPSLOC=-0", "AT+QGPSLOC=-1", "AT+QGPSLOC=1a", "AT+QGPSLOC=,", "AT+QGPSLOC=0,",
    "AT+QGPSLOC=99999999999999", 'AT+QGPSLOC="0"',
])
def test_gnss_hostile_arguments_are_501_and_change_nothing(ec2x_timed, line):
    host, _, _ = ec2x_timed
    assert host.at(line) == cme(501)
    assert host.at("AT+CMEE=2") == OK
    assert host.at(line) == b"\r\n+CME ERROR: Invalid parameter\r\n"
    assert host.at("AT+CMEE=0") == OK
    assert host.at(line) == ERROR
    assert host.at("AT+CMEE=1;+QGPS?") == answer("+QGPS: 0")


def test_gnss_forms_it_lacks_are_plain_error(ec2x_timed):
    host, _, _ = ec2x_timed
    assert host.at("AT+CMEE=2") == OK
    for line in ("AT+QGPS", "AT+QGPSEND=", "AT+QGPSEND=1", "AT+QGPSEND?", "AT+QGPS?=",
                 'AT+QGPSLOC="x', "AT+QGPSCFG", "AT+QGPSCFG?", "AT+QGPSCFG=", 'AT+QGPSCFG="outport",usbnmea',
                 'AT+QGPSCFG="nmeasrc","1"', 'AT+QGPSCFG="outport","none",1', "AT+QGPSCFG=outport",
                 'AT+QGPSCFG="gnssconfig",1', 'AT+QGPSCFG="nmeasrc",-1', 'AT+QGPSCFG="nmeasrc",99999999999999',
                 'AT+QGPSCFG="outport","usbnmea', "AT+QGPSDEL=0", "AT+QGPSGNMEA=\"GGA\"", "AT+QGPSXTRA=1"):
        assert host.at(line) == ERROR, line
    assert host.at('AT+QGPSCFG="outport";+QGPSCFG="nmeasrc"') == \
        urcs('+QGPSCFG: "outport","usbnmea"', '+QGPSCFG: "nmeasrc",0') + OK


def test_gnss_session_errors_in_chains_one_final_each(ec2x_timed):
    host, advance, _ = ec2x_timed
    got = host.at("AT+QGPS=1;+QGPS=1;+CEER")                   # the second is 504, ends the line
    assert got == cme(504) and finals(got) == 1
    assert host.at("AT+QGPS?") == answer("+QGPS: 1")            # the first one did start it
    got = host.at("AT+QGPSLOC=2;+CEER")
    assert got == cme(516)
    assert host.at("AT+QGPSEND;+QGPSEND") == cme(505)
    assert host.at("AT+QGPS?;+QGPSLOC") == b"\r\n+QGPS: 0\r\n" + cme(505)
    host.write("ATV0\r")
    assert host.read_until(b"0\r") == b"0\r"
    host.write("AT+QGPSLOC\r")
    assert host.read_until(b"\r\n") == b"+CME ERROR: 505\r\n"
    host.write("AT+CMEE=0;+QGPSLOC\r")
    assert host.read_until(b"4\r") == b"4\r"
    host.write("ATQ1;+QGPSEND\r")                               # suppressed, +CME ERROR too
    host.write("ATQ0;V1;+CMEE=1\r")
    assert host.read_until(OK) == OK
    assert host.at("AT+QGPS=1") == OK
    advance(30)
    assert host.at("AT+QGPS=1") == cme(504)                     # still one session, fix kept
    assert host.at("AT+QGPSLOC=2").startswith(b"\r\n+QGPSLOC: ")
    alive(host)


def test_qgpsloc_every_mode_exact_on_the_modem_clock_across_a_date(ec2x_timed):
    host, advance, _ = ec2x_timed
    assert host.at('AT+CCLK="30/06/15,02:00:00+32"') == OK       # UTC 2030-06-14 18:00:00
    assert host.at("AT+QGPSLOC") == cme(505)
    assert host.at("AT+QGPS=1") == OK
    advance(29.999)
    assert host.at("AT+QGPSLOC=1") == cme(516)
    advance(0.001)
    for mode in (0, 1, 2):
        got = host.at(f"AT+QGPSLOC={mode}")
        m = loc_pattern(mode, "1800", "140630").fullmatch(got[2:-len(OK) - 2])
        assert got.startswith(b"\r\n") and got.endswith(b"\r\n" + OK) and m and seconds_ok(m), got
    got = host.at("AT+QGPSLOC")                                  # the default is mode 0
    assert loc_pattern(0, "1800", "140630").search(got), got
    # a western zone: local 20:00 on the 14th is 00:00 UTC on the 15th
    assert host.at('AT+CCLK="30/06/14,20:00:00-16"') == OK
    got = host.at("AT+QGPSLOC=2")
    m = loc_pattern(2, "0000", "150630").search(got)
    assert m and seconds_ok(m), got
    # ATV0: the text then 0<CR>; ATQ1: the text alone
    host.write("ATV0;+QGPSLOC=1\r")
    got = host.read_until(b"\n0\r")
    assert loc_pattern(1, "0000", "150630").match(got) and got.endswith(b",09\r\n0\r"), got
    host.write("ATV1;Q1;+QGPSLOC=0\r")
    got = host.read_until(b",09\r\n")
    assert got.startswith(b"\r\n") and loc_pattern(0, "0000", "150630").search(got), got
    host.write("ATQ0\r")
    assert host.read_until(OK) == OK
    assert host.at("AT+QGPSEND") == OK
    assert host.at("AT+QGPSLOC=2") == cme(505)


@pytest.mark.parametrize("eol", [b"\r", b"\r\n"])
def test_qgpsloc_byte_by_byte_read_in_odd_chunks(ec2x_timed, emulator, eol):
    host, advance, port = ec2x_timed
    assert host.at("AT+QGPS=1") == OK
    advance(30)
    trickle(host, emulator, port, b"AT+QGPSLOC=2" + eol)
    got = read_chunked(host, b"OK\r\n", 5)
    assert re.fullmatch(rb"\r\n\+QGPSLOC: \d{6}\.000," + re.escape(f"{POSITION[2]},{REST},".encode())
                        + rb"\d{6},09\r\n\r\nOK\r\n", got), got
    assert host.quiet_for(0.1) == b""


def test_gnss_stays_on_through_cfun_0_and_4(ec2x_timed):
    host, advance, _ = ec2x_timed
    assert host.at("AT+QGPS=1") == OK
    advance(10)
    assert host.at("AT+CFUN=0") == OK
    advance(20)                                                  # the fix comes with the radio off
    got = host.at("AT+QGPS?;+QGPSLOC=2")
    assert got.startswith(b"\r\n+QGPS: 1\r\n\r\n+QGPSLOC: ") and got.endswith(OK), got
    assert host.at("AT+CFUN=4;+CFUN=1;+QGPS?") == answer("+QGPS: 1")
    assert host.at("AT+QGPSLOC=1").startswith(b"\r\n+QGPSLOC: ")
    assert host.at("AT+QGPSEND") == OK


@pytest.mark.parametrize("how", ["cfun", "qpowd", "control"])
def test_a_restart_cancels_the_pending_fix(ec2x_timed, emulator, how):
    host, advance, _ = ec2x_timed
    assert host.at("AT+QGPS=1") == OK                            # the fix would come at t=30
    advance(10)
    if how == "cfun":
        assert host.at("AT+CFUN=1,1") == OK
    elif how == "qpowd":
        host.write("AT+QPOWD\r")
        assert host.read_until(b"POWERED DOWN\r\n").endswith(b"\r\nPOWERED DOWN\r\n")
    else:
        assert emulator.control("reboot") == {"ok": True}
    restart_done(host, advance)                                  # t=12
    assert host.at("AT+QGPS?;+QGPSLOC") == b"\r\n+QGPS: 0\r\n" + cme(505)
    assert host.at("AT+QGPS=1") == OK                            # a new session: fix at t=42
    advance(25)                                                  # t=37: past the old one's time
    assert host.at("AT+QGPSLOC=2") == cme(516)
    advance(5)
    assert host.at("AT+QGPSLOC=2").startswith(b"\r\n+QGPSLOC: ")


def test_fixcount_boundaries_and_an_ended_sessions_timer(ec2x_timed):
    host, advance, _ = ec2x_timed
    assert host.at("AT+QGPS=1,30,50,1,1") == OK                 # one fix, then off 1 s later
    advance(30)
    assert host.at("AT+QGPSLOC=2").startswith(b"\r\n+QGPSLOC: ")
    advance(0.999)
    assert host.at("AT+QGPS?") == answer("+QGPS: 1")
    advance(0.001)
    assert host.at("AT+QGPS?;+QGPSLOC=2") == b"\r\n+QGPS: 0\r\n" + cme(505)
    assert host.at("AT+QGPSEND") == cme(505)
    # a session whose <fixcount> timer is pending, ended and replaced by one without
    assert host.at("AT+QGPS=1,1,1,1,10") == OK                  # fix at 30, off at 40
    advance(35)
    assert host.at("AT+QGPSEND;+QGPS=1") == OK                   # the new one: fix at 65, never off
    advance(6)                                                   # t=41: the old off time passed
    assert host.at("AT+QGPS?;+QGPSLOC") == b"\r\n+QGPS: 1\r\n" + cme(516)
    advance(24)
    assert host.at("AT+QGPSLOC").startswith(b"\r\n+QGPSLOC: ")
    advance(1000)
    assert host.at("AT+QGPS?") == answer("+QGPS: 1")
    assert host.at("AT+QGPS=1,255,1000,1000,65535;+QGPS=?") == cme(504)


def test_qgpscfg_items_survive_a_restart_and_refuse_garbage(ec2x_timed):
    host, advance, _ = ec2x_timed
    assert host.at('AT+QGPSCFG="OutPort","UARTDEBUG";+QGPSCFG="nmeasrc",001') == OK
    assert host.at('AT+QGPSCFG="outport",') == OK                # an omitted value stays
    assert host.at('AT+QGPSCFG="outport";+QGPSCFG="NMEASRC"') == \
        urcs('+QGPSCFG: "outport","uartdebug"', '+QGPSCFG: "nmeasrc",1') + OK
    for line in ('AT+QGPSCFG="outport","usbnmea ', 'AT+QGPSCFG="outport",""', 'AT+QGPSCFG="nmeasrc",2',
                 'AT+QGPSCFG="",1', 'AT+QGPSCFG=,', 'AT+QGPSCFG="outport","none";+QGPSCFG="nmeasrc",5'):
        assert host.at(line) == ERROR, line
    assert host.at('AT+QGPSCFG="outport"') == answer('+QGPSCFG: "outport","none"')    # the line's first ran
    assert host.at("AT+CFUN=1,1") == OK
    restart_done(host, advance)
    assert host.at('AT+QGPSCFG="outport";+QGPSCFG="nmeasrc";+QGPS?') == \
        urcs('+QGPSCFG: "outport","none"', '+QGPSCFG: "nmeasrc",1', "+QGPS: 0") + OK
    alive(host)


# =========================================================================================
# More framing: a pending (slow) answer, A/, S5 around a URC, mode 1 in an upload
# =========================================================================================
def test_cgev_waits_behind_a_slow_answer_in_the_order_raised(two_ctx, emulator):
    host, advance, port = two_ctx
    assert emulator.control("slow", command="+QIDEACT", ms=500) == {"ok": True}
    host.write("AT+QIDEACT=1\r")
    emulator.wait_received(port, host.written)
    assert emulator.control("pdp_deact", cid=2) == {"ok": True}     # while the answer is pending
    assert host.quiet_for(0.15) == b""
    advance(0.5)
    assert host.read_until(b'"pdpdeact",2\r\n') == OK + urcs(
        "+CGEV: ME PDN DEACT 1", "+CGEV: NW PDN DEACT 2", '+QIURC: "pdpdeact",2')
    assert host.at("AT+CEER") == answer('+CEER: "Regular deactivation"')


def test_a_slash_repeats_gnss_and_status_lines(ec2x_timed):
    host, advance, _ = ec2x_timed
    assert host.at("AT+QGPS=1") == OK
    host.write("A/")                                          # no terminator
    assert host.read_until(cme(504)) == cme(504)
    assert host.at('AT+QENG="servingcell"') == answer(serving())
    host.write("A/")
    assert host.read_until(OK) == answer(serving())
    assert host.at("AT+CFUN=1,1") == OK
    advance(2)
    host.read_until(BOOT_DONE)
    host.write("A/")                                          # after a restart there is none
    assert host.quiet_for(0.15) == b"A/"                      # (ATE1 again: echoed, not run)
    assert host.at("ATE0") == b"ATE0\r" + OK                 # the next line is a line of its own
    alive(host)


def test_backspace_around_a_urc_still_edits_the_line(open_modem, emulator):
    host, port = open_modem("ec2x")
    assert host.at('AT+CGEREP=2;+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
    host.read_until(b"ACT 1\r\n")
    trickle(host, emulator, port, b"AT+CEX")
    assert emulator.control("pdp_deact", cid=1) == {"ok": True}
    trickle(host, emulator, port, b"\x08ER\r")
    assert host.read_until(OK) == (urcs("+CGEV: NW PDN DEACT 1", '+QIURC: "pdpdeact",1')
                                   + answer('+CEER: "Regular deactivation"'))


def test_cgev_mode_1_keeps_the_codes_raised_during_an_upload(open_modem, emulator):
    """Mode 1 drops only what online data mode (transparent access) raises; an AT+QFUPL
    upload is no such link: its codes come after the upload's OK."""
    host, port = open_modem("ec2x")
    assert host.at('AT+CGEREP=1;+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
    host.read_until(b"ACT 1\r\n")
    host.write('AT+QFUPL="m1.bin",4\r')
    assert host.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
    host.write(b"ab")
    emulator.wait_received(port, host.written)
    assert emulator.control("pdp_deact", cid=1) == {"ok": True}
    host.write(b"cd")
    assert host.read_until(b'"pdpdeact",1\r\n') == (f"\r\n+QFUPL: 4,{xor16(b'abcd'):x}\r\n".encode() + OK
                                                    + urcs("+CGEV: NW PDN DEACT 1", '+QIURC: "pdpdeact",1'))


def test_buffered_codes_in_atv0_after_the_ok(ec2x_timed):
    host, _, _ = ec2x_timed
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1;+QIDEACT=1') == OK   # mode 0: kept
    host.write("ATV0;+CGEREP=2,1\r")
    assert host.read_until(b"DEACT 1\r\n") == b"0\r+CGEV: ME PDN ACT 1\r\n+CGEV: ME PDN DEACT 1\r\n"
    host.write("ATV1\r")
    assert host.read_until(OK) == OK


def test_codes_of_a_line_that_ends_in_a_data_prompt_wait_for_its_data(open_modem, emulator):
    """'AT+QIACT=2;+QISEND=0,3': the ACT code raised before the prompt must not be written
    between '> ' and the data, nor after CONNECT of an upload."""
    with TcpServer("sink") as sink:
        emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", sink.port)
        host, port = open_modem("ec2x")
        assert host.at('AT+CGEREP=2;+QICSGP=1,1,"UNINET","","",1;+QIACT=1;+QICSGP=2,1,"B","","",1') == OK
        host.read_until(b"ACT 1\r\n")
        assert host.at(f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,0') == OK
        host.read_until(b"+QIOPEN: 0,0\r\n")
        host.write("AT+QIACT=2;+QISEND=0,3\r")
        assert host.read_until(b"> ") == b"\r\n> "
        assert host.quiet_for(0.1) == b""
        host.write(b"xyz")
        assert host.read_until(b"ACT 2\r\n") == b"\r\nSEND OK\r\n" + urcs("+CGEV: ME PDN ACT 2")
        host.write('AT+QIDEACT=2;+QFUPL="q.bin",3\r')
        assert host.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
        assert host.quiet_for(0.1) == b""
        host.write(b"xyz")
        assert host.read_until(b"DEACT 2\r\n") == (f"\r\n+QFUPL: 3,{xor16(b'xyz'):x}\r\n".encode() + OK
                                                   + urcs("+CGEV: ME PDN DEACT 2"))
        assert sink.wait_connection().wait_received(3) == b"xyz"
        alive(host)
