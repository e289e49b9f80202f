"""Independent review of docs/behaviour.md against the running emulator, for the sections
"Identity, network, clock", "Device configuration commands" (with "Status" and "GNSS"),
"PDP contexts", "Files (EC2x, AT+QFUPL & co.)", "TCP/UDP sockets (EC2x)" and "DNS, ping,
NTP, packet domain (EC2x)".

Each test quotes the claim it checks (section + a short quote) in its docstring.  The claims
chosen are those no earlier test pins byte for byte (or pins only in part): combinations, caps,
resets at a restart, URC orders.  Timeouts run on the modem's manual clock; nothing here
measures wall time.  A test marked xfail(strict=True) would record a contradiction."""
from __future__ import annotations

import re
import socket

import pytest

from tests.e2e.socket_support import TCP_HOST, TCP_PORT, error_code, free_port, qiopen, udp_peer

OK = b"\r\nOK\r\n"
FINAL = re.compile(rb"\r\n(OK|ERROR|\+CME ERROR: \d+)\r\n")
BOOT_DONE = b"+QIND: SMS DONE\r\n"


def cme(code: int) -> bytes:
    return f"\r\n+CME ERROR: {code}\r\n".encode()


@pytest.fixture
def online(ec2x_timed):
    """ec2x_timed with PDP context 1 active."""
    host, _, _ = ec2x_timed
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
    return ec2x_timed


def reboot(host, advance) -> None:
    """AT+CFUN=1,1, its boot URCs on the manual clock, then ATE0 again."""
    assert host.at("AT+CFUN=1,1").endswith(OK)          # (held +CGEV codes may come first)
    advance(1)
    host.read_until(BOOT_DONE)
    assert host.at("ATE0").endswith(OK)


def silent_peer() -> socket.socket:
    """A listening socket that never accepts: the kernel completes the handshake and ACKs a
    FIN, but nothing ever answers or closes -- a peer "still open"."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    return s


# =========================================================================================
# Identity, network, clock
# =========================================================================================

@pytest.mark.parametrize("profile", ["ec2x", "ml302"])
def test_location_fields_are_the_same_fixed_cell_on_both_profiles(open_modem, profile):
    """Identity, network, clock: "`AT+CREG=2` (and CGREG/CEREG) adds the serving cell's
    location fields ... (EC2x `"D5D5","8A21B03"` ...; a profile without `[cell]`, as the
    ML302's: the same fixed values)"."""
    host, _ = open_modem(profile)
    assert host.at("AT+CREG=2;+CEREG=2") == OK
    assert host.at("AT+CREG?;+CEREG?") == (b'\r\n+CREG: 2,1,"D5D5","8A21B03",7\r\n'
                                         b'\r\n+CEREG: 2,1,"D5D5","8A21B03",7\r\n' + OK)


def test_a_reboot_restores_csca_ctzr_sms_settings_but_ctzu_is_kept_in_nv(ec2x_timed):
    """Device configuration: "AT+CTZR and AT+CSCS start again from their defaults at a
    reboot"; "The module keeps AT+CTZU ... in NV ... so they survive AT+CFUN=1,1"; SMS set-up:
    AT+CMGF, AT+CSCA, AT+CNMI "are kept until a restart and read back"."""
    host, advance, _ = ec2x_timed
    assert host.at('AT+CSCS="UCS2";+CTZR=2;+CTZU=3;+CMGF=1;+CSCA="5550100";+CNMI=1,2') == OK
    assert host.at("AT+CSCS?;+CTZR?;+CTZU?;+CMGF?;+CSCA?;+CNMI?") == (
        b'\r\n+CSCS: "UCS2"\r\n\r\n+CTZR: 2\r\n\r\n+CTZU: 3\r\n\r\n+CMGF: 1\r\n'
        b'\r\n+CSCA: "5550100",129\r\n\r\n+CNMI: 1,2,0,0,0\r\n' + OK)
    reboot(host, advance)
    assert host.at("AT+CSCS?;+CTZR?;+CTZU?;+CMGF?;+CSCA?;+CNMI?") == (
        b'\r\n+CSCS: "GSM"\r\n\r\n+CTZR: 0\r\n\r\n+CTZU: 3\r\n\r\n+CMGF: 0\r\n'
        b'\r\n+CSCA: "+8613010112500",145\r\n\r\n+CNMI: 2,1,0,0,0\r\n' + OK)


def test_csca_under_ucs2_stays_plain_digits_and_tosca_follows_the_plus(ec2x_timed):
    """Device configuration, SMS set-up: "tosca 145 for a "+" number else 129"; "The `<sca>`
    is always plain digits, also under AT+CSCS="UCS2" (where a module would use hex)"."""
    host, _, _ = ec2x_timed
    assert host.at('AT+CSCS="UCS2";+CSCA="+4915200000"') == OK
    assert host.at("AT+CSCA?") == b'\r\n+CSCA: "+4915200000",145\r\n' + OK
    assert host.at('AT+CSCA="015200000"') == OK
    assert host.at("AT+CSCA?") == b'\r\n+CSCA: "015200000",129\r\n' + OK


def test_qlts_is_gmt_for_modes_0_and_1_and_local_for_2_with_the_zone_in_quarters(ec2x_timed):
    """Device configuration: "`AT+QLTS[=<mode>]`: `+QLTS: "yyyy/MM/dd,hh:mm:ss±zz,0"` from
    the modem clock: GMT for modes 0 and 1 ..., local time for 2; the zone in quarters, DST
    0"; AT+CCLK "accepts time zones of -96..+96 quarters (27.007), the ends included"."""
    host, _, _ = ec2x_timed
    assert host.at('AT+CCLK="30/01/01,05:00:00-20"') == OK      # local 05:00 at -05:00
    gmt = re.compile(rb'\r\n\+QLTS: "2030/01/01,10:00:0\d-20,0"\r\n\r\nOK\r\n')
    for line in ("AT+QLTS", "AT+QLTS=0", "AT+QLTS=1"):
        assert gmt.fullmatch(host.at(line)), line
    assert re.fullmatch(rb'\r\n\+QLTS: "2030/01/01,05:00:0\d-20,0"\r\n\r\nOK\r\n', host.at("AT+QLTS=2"))
    assert host.at('AT+CCLK="30/01/01,05:00:00+97"') == cme(50)   # one past the end


# =========================================================================================
# Device configuration: Status
# =========================================================================================

def test_cgerep_mode_0_keeps_only_the_newest_32_codes(online):
    """Status: "`<mode>` 0 keeps the codes in the module (the newest 32); entering 1 or 2 with
    `<bfr>` 1 writes them after the OK"."""
    host, _, _ = online
    assert host.at("AT+QIDEACT=1") == OK                        # code 1: ME PDN DEACT 1
    for cid in (2, 3):
        assert host.at(f'AT+QICSGP={cid},1,"UNINET","","",1') == OK
    # 18 more rounds of ACT/DEACT, contexts 2 and 3 alternating, numbered by their order
    for i in range(18):
        cid = 2 + i % 2
        assert host.at(f"AT+QIACT={cid};+QIDEACT={cid}") == OK
    assert host.at("AT+CGEREP=2,1") == OK
    expected = []
    for i in range(18):
        cid = 2 + i % 2
        expected += [f"+CGEV: ME PDN ACT {cid}", f"+CGEV: ME PDN DEACT {cid}"]
    expected = expected[-32:]                                   # 37 codes raised, 32 kept
    got = []
    for _ in range(32):
        got.append(host.seen(re.compile(rb"\+CGEV: [^\r]*")).decode())
    assert got == expected
    assert b"+CGEV" not in host.quiet_for(0.3)


def test_network_deregistration_urc_order(emulator, online):
    """Status: "+CGEV: NW PDN DEACT <cid> when the network does (before the EC2x's
    `+QIURC: "pdpdeact",<cid>`), then ... `+CGEV: NW DETACH` (a lost registration) once the
    packet domain is detached, after its contexts' codes"; DNS/packet domain: "A network
    deregistration ... sends the registration URCs, then `+QIURC: "pdpdeact",<cid>` (EC2x),
    then the sockets' "closed"."; AT+CEER "`PDP lowerlayer error` after contexts were lost with
    the registration"."""
    host, _, _ = online
    peer = silent_peer()
    try:
        emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", peer.getsockname()[1])
        assert host.at("AT+CGEREP=2,0;+CREG=1;+CEREG=1") == OK
        qiopen(host, 0)
        assert emulator.control("register", stat=0)["ok"]
        host.seen(b"+CGEV: NW DETACH\r\n")
        tail = bytes(host.transcript[host.transcript.rindex(b"+QIOPEN: 0,0"):])
        lines = [ln for ln in tail.split(b"\r\n") if ln][1:]
        assert lines == [b"+CREG: 0", b"+CEREG: 0", b"+CGEV: NW PDN DEACT 1",
                         b'+QIURC: "pdpdeact",1', b'+QIURC: "closed",0', b"+CGEV: NW DETACH"]
        host.pending.clear()
        assert host.at("AT+CEER") == b'\r\n+CEER: "PDP lowerlayer error"\r\n' + OK
    finally:
        peer.close()


def test_network_detach_after_a_restart_is_reported(emulator, online):
    """A restart attaches again once its SIM is read (+CPIN: READY); the network dropping the
    module after that is a detach like any other: `+CGEV: NW DETACH` (it was missed: what a
    detach is told from was taken while the SIM was still being read, stat 2)."""
    host, advance, _ = online
    reboot(host, advance)
    host.pending.clear()
    assert host.at("AT+CGATT?") == b"\r\n+CGATT: 1\r\n" + OK
    assert host.at('AT+CGEREP=2,0;+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
    assert emulator.control("register", stat=0)["ok"]
    host.seen(b"+CGEV: NW DETACH\r\n")
    tail = bytes(host.transcript[host.transcript.rindex(b"+CGATT: 1"):])
    lines = [ln for ln in tail.split(b"\r\n") if ln.startswith(b"+CGEV")]
    assert lines == [b"+CGEV: ME PDN ACT 1", b"+CGEV: NW PDN DEACT 1", b"+CGEV: NW DETACH"]


def test_qeng_limsrv_on_denied_registration_and_search_alone_without_cell(emulator, ec2x_timed):
    """Status: "`LIMSRV` with the full line while camped without that registration
    (registration denied, stat 3 ...), `+QENG: "servingcell","SEARCH"` alone with no cell
    (... stat 0/2/4)"; neighbourcell "with no cell (SEARCH) OK alone"."""
    host, _, _ = ec2x_timed
    tail = b',"LTE","FDD",460,01,8A21B03,226,1650,3,5,5,D5D5,-94,-9,-65,8,30\r\n\r\nOK\r\n'
    assert emulator.control("register", stat=3)["ok"]
    assert host.at('AT+QENG="servingcell"') == b'\r\n+QENG: "servingcell","LIMSRV"' + tail
    for stat in (2, 4):
        assert emulator.control("register", stat=stat)["ok"]
        assert host.at('AT+QENG="servingcell"') == b'\r\n+QENG: "servingcell","SEARCH"\r\n' + OK
        assert host.at('AT+QENG="neighbourcell"') == OK
    assert emulator.control("register", stat=1)["ok"]
    assert host.at('AT+QENG="servingcell"') == b'\r\n+QENG: "servingcell","NOCONN"' + tail


def test_ceer_and_cgerep_forget_everything_at_a_restart(ec2x_timed):
    """Status: AT+CEER "`No cause information available` until something happened (and after
    a restart)"; AT+CGEREP "A restart sets 0,0 again"."""
    host, advance, _ = ec2x_timed
    assert host.at("AT+CFUN=0") == OK
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1') == OK
    assert host.at("AT+QIACT=1") == b"\r\nERROR\r\n"
    assert host.at("AT+CEER") == b'\r\n+CEER: "Phone is offline"\r\n' + OK
    assert host.at("AT+CGEREP=1,1") == OK
    reboot(host, advance)
    assert host.at("AT+CEER") == b'\r\n+CEER: "No cause information available"\r\n' + OK
    assert host.at("AT+CGEREP?") == b"\r\n+CGEREP: 0,0\r\n" + OK


# =========================================================================================
# Device configuration: GNSS
# =========================================================================================

def test_gnss_utc_and_date_come_from_the_modem_clock_as_in_the_doc_example(ec2x_timed):
    """GNSS: "UTC hhmmss.sss from the modem clock at whole seconds"; the doc's example
    `+QGPSLOC: 022030.000,3107.4070N,12132.5926E,0.9,12.5,3,0.00,0.0,0.0,150630,09` -- set the
    clock to 2030-06-15 10:20:30 +08:00 and the fix reads that UTC time and date."""
    host, advance, _ = ec2x_timed
    assert host.at('AT+CCLK="30/06/15,10:20:30+32";+QGPS=1') == OK
    advance(30)
    m = re.fullmatch(rb"\r\n\+QGPSLOC: 02(\d\d)(\d\d)\.000,3107\.4070N,12132\.5926E,0\.9,12\.5,3,"
                     rb"0\.00,0\.0,0\.0,150630,09\r\n\r\nOK\r\n", host.at("AT+QGPSLOC=0"))
    assert m, "not the doc's line"
    seconds = int(m.group(1)) * 60 + int(m.group(2))
    assert 20 * 60 + 30 <= seconds <= 20 * 60 + 30 + 180      # the clock runs on from the value set


def test_gnss_survives_cfun_0_but_not_qpowd(ec2x_timed):
    """GNSS: "A restart (AT+CFUN=1,1, AT+QPOWD, the control API's reboot) turns the engine off;
    AT+CFUN=0/4 does not (GNSS is not the cellular radio)"; Identity: AT+QPOWD "OK, then
    `POWERED DOWN` ..., nothing the host writes is read or answered ... until it starts again
    with its start-up URCs: by itself `defaults.qpowd_power_on_ms` later (EC2x 1000)"."""
    host, advance, _ = ec2x_timed
    assert host.at("AT+QGPS=1;+CFUN=0") == OK
    assert host.at("AT+QGPS?") == b"\r\n+QGPS: 1\r\n" + OK
    assert host.at("AT+CFUN=1") == OK
    host.write(b"AT+QPOWD\r")
    assert host.read_until(b"POWERED DOWN\r\n") == b"\r\nOK\r\n\r\nPOWERED DOWN\r\n"
    host.write(b"AT+QGPS?\r")                                   # the module is off
    advance(0.9)
    assert host.quiet_for(0.3) == b""
    advance(0.2)
    host.read_until(b"\r\nRDY\r\n")
    advance(1)
    host.read_until(BOOT_DONE)
    assert host.at("ATE0").endswith(OK)
    assert host.at("AT+QGPS?") == b"\r\n+QGPS: 0\r\n" + OK


def test_fixcount_turns_the_engine_off_n_times_fixrate_after_the_first_fix(ec2x_timed):
    """GNSS: "`<fixcount>` N > 0 turns the engine off N x `<fixrate>` s after the first fix
    (the last fix is reported until the next would have come)"."""
    host, advance, _ = ec2x_timed
    assert host.at("AT+QGPS=1,30,50,3,4") == OK                 # off 12 s after the fix
    advance(30)
    assert host.at("AT+QGPSLOC=2").startswith(b"\r\n+QGPSLOC: ")
    advance(11.5)
    assert host.at("AT+QGPS?") == b"\r\n+QGPS: 1\r\n" + OK
    assert host.at("AT+QGPSLOC=2").startswith(b"\r\n+QGPSLOC: ")
    advance(0.6)
    assert host.at("AT+QGPS?") == b"\r\n+QGPS: 0\r\n" + OK
    assert host.at("AT+QGPSLOC=2") == cme(505)


# =========================================================================================
# PDP contexts
# =========================================================================================

def test_pdp_context_forms_and_pool_addresses(open_modem):
    """PDP contexts: "`AT+QICSGP=<id>` is the query form; `AT+QICSGP?` is ERROR"; "`AT+QIACT`
    on an active context is ERROR. Addresses are handed out from the profile's pool
    (`10.7.157.1` for EC2x, `10.127.79.43` for ML302)"; "ML302 `AT+CGACT=1,1` answers
    `+CGACT: 1, 1, <ip>` (with the manual's spaces) then OK"."""
    ec, _ = open_modem("ec2x")
    assert ec.at('AT+QICSGP=1,1,"UNINET","","",1') == OK
    assert ec.at("AT+QICSGP=1") == b'\r\n+QICSGP: 1,"UNINET","","",1\r\n' + OK
    assert ec.at("AT+QICSGP?") == b"\r\nERROR\r\n"
    assert ec.at("AT+QIACT=1") == OK
    assert ec.at("AT+QIACT=1") == b"\r\nERROR\r\n"
    assert ec.at("AT+QIACT?") == b'\r\n+QIACT: 1,1,1,"10.7.157.1"\r\n' + OK
    ml, _ = open_modem("ml302")
    assert ml.at('AT+CGDCONT=1,"IP","CMNET"') == OK
    assert ml.at("AT+CGACT=1,1") == b"\r\n+CGACT: 1, 1, 10.127.79.43\r\n" + OK
    assert ml.at("AT+CGPADDR=1") == b'\r\n+CGPADDR: 1,"10.127.79.43"\r\n' + OK


# =========================================================================================
# Files
# =========================================================================================

def test_qfmov_copy_across_drives_keeps_the_source_and_overwrite_rules(ec2x_timed):
    """Files: "`<copy>` 1 keeps the source, 0 (default) moves it; `<overwrite>` 1 replaces an
    existing destination, 0 (default) refuses it with 407. Across drives too (RAM <-> UFS);
    405 no source, ... a file moved onto itself OK and unchanged."""
    host, _, _ = ec2x_timed
    assert host.upload("src", b"hello") == b"\r\n+QFUPL: 5,6b09\r\n" + OK
    assert host.upload("RAM:dst", b"xy") == b"\r\n+QFUPL: 2,7879\r\n" + OK
    assert host.at('AT+QFMOV="src","RAM:dst"') == cme(407)
    assert host.at('AT+QFMOV="src","RAM:dst",1,1') == OK
    assert host.at('AT+QFLST="*";+QFLST="RAM:*"') == (
        b'\r\n+QFLST: "src",5\r\n\r\n+QFLST: "RAM:dst",5\r\n' + OK)
    assert host.at('AT+QFMOV="src","src"') == OK
    assert host.at('AT+QFMOV="UFS:src","src",0,1') == OK
    assert host.at('AT+QFMOV="src","RAM:moved"') == OK
    assert host.at('AT+QFLST="*"') == OK
    assert host.at('AT+QFLST="RAM:*"') == b'\r\n+QFLST: "RAM:dst",5\r\n+QFLST: "RAM:moved",5\r\n' + OK
    assert host.at('AT+QFMOV="src","x"') == cme(405)


def test_qfopen_mode_0_keeps_the_contents_mode_1_empties_them(ec2x_timed):
    """Files: "Mode 0 (default) opens or creates an empty file, 1 creates or empties, 2 is
    read-only and needs the file (405)"; handles "start at ... 1027, the lowest free one
    first"."""
    host, _, _ = ec2x_timed
    host.upload("f", b"0123456789")
    assert host.at('AT+QFOPEN="f"') == b"\r\n+QFOPEN: 1027\r\n" + OK
    assert host.at("AT+QFREAD=1027,4") == b"\r\nCONNECT 4\r\n0123\r\nOK\r\n"
    assert host.at('AT+QFOPEN="RAM:new"') == b"\r\n+QFOPEN: 1028\r\n" + OK
    assert host.at("AT+QFCLOSE=1027") == OK
    assert host.at('AT+QFOPEN="f",1') == b"\r\n+QFOPEN: 1027\r\n" + OK
    assert host.at('AT+QFLST="f";+QFLST="RAM:*"') == (
        b'\r\n+QFLST: "f",0\r\n\r\n+QFLST: "RAM:new",0\r\n' + OK)
    assert host.at('AT+QFOPEN="nothere",2') == cme(405)


def test_qfwrite_takes_guarded_plus_ctrl_z_and_cr_as_data(ec2x_timed):
    """Files: AT+QFWRITE "then exactly `<length>` bytes are data (`+++` too -- the FILE manual
    names the escape for AT+QFUPL only --, Ctrl+Z, CR) ... and `+QFWRITE: <written>,<file
    size>` OK"."""
    host, advance, _ = ec2x_timed
    assert host.at('AT+QFOPEN="w"') == b"\r\n+QFOPEN: 1027\r\n" + OK
    host.write(b"AT+QFWRITE=1027,5\r")
    host.read_until(b"\r\nCONNECT\r\n")
    advance(1.1)
    host.write(b"+++")                                          # with the guard times around it
    advance(1.1)
    assert host.quiet_for(0.3) == b""                           # still data: no OK
    host.write(b"\x1a\r")
    assert host.read_until(b"OK\r\n") == b"\r\n+QFWRITE: 5,5\r\n" + OK
    assert host.at("AT+QFSEEK=1027,0;+QFREAD=1027") == b"\r\nCONNECT 5\r\n+++\x1a\r\r\nOK\r\n"


def test_qfwrite_timeout_counts_idle_time_and_keeps_what_came(ec2x_timed):
    """Files: AT+QFWRITE "The timeout counts idle time, as AT+QFUPL's: what came is written and
    reported (`+QFWRITE: 0,<size>` if nothing did)"."""
    host, advance, _ = ec2x_timed
    assert host.at('AT+QFOPEN="t"') == b"\r\n+QFOPEN: 1027\r\n" + OK
    host.write(b"AT+QFWRITE=1027,10,2\r")
    host.read_until(b"\r\nCONNECT\r\n")
    host.write(b"ab")
    advance(1.5)
    host.write(b"c")
    advance(1.5)                                                # 3 s since CONNECT, 1.5 idle
    assert host.quiet_for(0.3) == b""
    advance(0.6)
    assert host.read_until(b"OK\r\n") == b"\r\n+QFWRITE: 3,3\r\n" + OK
    host.write(b"AT+QFWRITE=1027,4,2\r")
    host.read_until(b"\r\nCONNECT\r\n")
    advance(2.1)
    assert host.read_until(b"OK\r\n") == b"\r\n+QFWRITE: 0,3\r\n" + OK


def test_qfupl_plus_plus_plus_completing_the_size_is_data(ec2x_timed):
    """Files: "A `+++` without the guard times, or one whose bytes complete `<file_size>`, is
    data." -- and one with them, before that, ends the upload with what came first."""
    host, advance, _ = ec2x_timed
    host.write(b'AT+QFUPL="full",10\r')
    host.read_until(b"\r\nCONNECT\r\n")
    host.write(b"abcdefg")
    advance(1.1)
    host.write(b"+++")
    advance(1.1)
    assert host.read_until(b"OK\r\n") == b"\r\n+QFUPL: 10,2b60\r\n" + OK     # 10 bytes of data
    host.write(b'AT+QFUPL="part",10\r')
    host.read_until(b"\r\nCONNECT\r\n")
    host.write(b"abc")
    advance(1.1)
    host.write(b"+++")
    advance(1.1)
    assert host.read_until(b"OK\r\n") == b"\r\n+QFUPL: 3,262\r\n" + OK
    assert host.at('AT+QFLST="*"') == b'\r\n+QFLST: "full",10\r\n+QFLST: "part",3\r\n' + OK


def test_qfread_under_atv0_is_1_cr_data_0_cr(ec2x_timed):
    """Files: AT+QFREAD "`\\r\\nCONNECT <n>\\r\\n`, n bytes, `\\r\\nOK\\r\\n` ... (ATV0:
    `1<CR>`, no count)"."""
    host, _, _ = ec2x_timed
    host.upload("v", b"xyz")
    assert host.at('AT+QFOPEN="v",2') == b"\r\n+QFOPEN: 1027\r\n" + OK
    host.write(b"ATV0;+QFREAD=1027\r")
    assert host.read_until(b"0\r") == b"1\rxyz0\r"


def test_a_restart_drops_ram_files_and_handles_but_keeps_ufs_writes(ec2x_timed):
    """Files: "RAM is lost on restart and AT+CFUN=1,1"; "A restart (AT+CFUN=1,1) closes every
    handle"; "Every write goes to the drive at once (UFS atomically): `AT+QFLST` shows it, a
    restart keeps it, nothing is held in a handle"."""
    host, advance, _ = ec2x_timed
    host.upload("RAM:r", b"ram")
    assert host.at('AT+QFOPEN="u"') == b"\r\n+QFOPEN: 1027\r\n" + OK
    host.write(b"AT+QFWRITE=1027,4\r")
    host.read_until(b"\r\nCONNECT\r\n")
    host.write(b"kept")
    assert host.read_until(b"OK\r\n") == b"\r\n+QFWRITE: 4,4\r\n" + OK
    assert host.at('AT+QFLST="u"') == b'\r\n+QFLST: "u",4\r\n' + OK      # before any close
    reboot(host, advance)
    assert host.at("AT+QFOPEN?") == OK
    assert host.at("AT+QFPOSITION=1027") == cme(416)
    assert host.at('AT+QFLST="RAM:*"') == OK
    host.write(b'AT+QFDWL="u"\r')
    assert host.read_until(b"OK\r\n") == b"\r\nCONNECT\r\nkept\r\n+QFDWL: 4,1b11\r\n" + OK


def test_names_with_spaces_or_over_80_characters_are_406_on_either_drive(ec2x_timed):
    """Files: "over 80 characters ... is `+CME ERROR: 406`, and so are names with leading or
    trailing spaces"."""
    host, _, _ = ec2x_timed
    for name in (" a", "a ", "RAM: a", "RAM:a ", "y" * 81, "RAM:" + "y" * 81):
        assert host.at(f'AT+QFUPL="{name}",1') == cme(406), name
        assert host.at(f'AT+QFOPEN="{name}"') == cme(406), name
    assert host.upload("RAM:" + "y" * 80, b"z") == b"\r\n+QFUPL: 1,7a00\r\n" + OK


# =========================================================================================
# TCP/UDP sockets
# =========================================================================================

def test_qiopen_on_an_inactive_context_is_ok_then_561_but_error_in_mode_2(ec2x_timed):
    """TCP/UDP sockets: "An id in use (563) or an inactive context (561) also answers OK and
    then the URC ...; in mode 2 these are ERROR."""
    host, _, _ = ec2x_timed
    qiopen(host, 2, code=561)
    assert host.at(f'AT+QIOPEN=1,3,"TCP","{TCP_HOST}",{TCP_PORT},0,2') == b"\r\nERROR\r\n"
    assert error_code(host) == 561
    assert host.at("AT+QISTATE") == OK                         # nothing was left open


def test_ids_are_one_pool_with_ssl_and_qiopen_in_use_is_ok_then_563(online, tcp_echo):
    """TCP/UDP sockets: "connectIDs and AT+QSSLOPEN clientIDs are one pool of 12: an id in use
    by either is 563 ... to the other"; "AT+QSSLOPEN keeps its plain ERROR"."""
    host, _, _ = online
    qiopen(host, 4)
    assert host.at(f'AT+QSSLOPEN=1,1,4,"{TCP_HOST}",{TCP_PORT},0') == b"\r\nERROR\r\n"
    assert error_code(host) == 563
    qiopen(host, 4, code=563)
    assert host.at("AT+QICLOSE=4,0") == OK


def test_listener_and_udp_service_refusals(online):
    """TCP/UDP sockets: "A client remote port 0, a listener without `<local_port>` or a
    listener in mode 2 are ERROR (552)"; "a UDP SERVICE cannot be switched to mode 2 (572)";
    AT+QISENDEX "not on a UDP SERVICE (572)"."""
    host, _, _ = online
    for line in (f'AT+QIOPEN=1,1,"TCP","{TCP_HOST}",0,0,0',
                 'AT+QIOPEN=1,1,"TCP LISTENER","127.0.0.1",0,0,0',
                 f'AT+QIOPEN=1,1,"TCP LISTENER","127.0.0.1",0,{free_port()},2'):
        assert host.at(line) == b"\r\nERROR\r\n", line
        assert error_code(host) == 552, line
    qiopen(host, 2, "UDP SERVICE", "127.0.0.1", 0, local_port=free_port(socket.SOCK_DGRAM))
    assert host.at("AT+QISWTMD=2,2") == b"\r\nERROR\r\n"
    assert error_code(host) == 572
    assert host.at('AT+QISENDEX=2,"4142"') == b"\r\nERROR\r\n"
    assert error_code(host) == 572
    assert host.at("AT+QISTATE=1,2").startswith(b'\r\n+QISTATE: 2,"UDP SERVICE","127.0.0.1",0,')


def test_incoming_full_drops_the_connection_and_closing_a_listener_keeps_its_incoming(emulator, online):
    """TCP/UDP sockets: "An accepted connection is a "TCP INCOMING" socket on the lowest free
    id of the shared pool ... announced by `+QIURC: "incoming",<id>,<serverID>,"<ip>",<port>`;
    with no free id, `+QIURC: "incoming full"` and the connection is dropped"; "Closing a
    listener does not close the TCP INCOMING sockets it accepted"; AT+QISTATE "listener 3
    ("listening") ...; serverID is the connectID except for TCP INCOMING (its listener's
    id)"."""
    host, _, _ = online
    peer = silent_peer()
    clients = []
    try:
        emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", peer.getsockname()[1])
        lport = free_port()
        qiopen(host, 3, "TCP LISTENER", "127.0.0.1", 0, local_port=lport)
        assert host.at("AT+QISTATE=1,3") == (
            f'\r\n+QISTATE: 3,"TCP LISTENER","127.0.0.1",0,{lport},3,1,3,0,"usbmodem"\r\n'.encode() + OK)
        clients.append(socket.create_connection(("127.0.0.1", lport), timeout=10))
        me = clients[0].getsockname()[1]
        assert host.seen(re.compile(rb'\+QIURC: "incoming",[^\r]*\r\n')) == \
            f'+QIURC: "incoming",0,3,"127.0.0.1",{me}\r\n'.encode()
        for cid in (1, 2, 4, 5, 6, 7, 8, 9, 10, 11):
            qiopen(host, cid)
        clients.append(socket.create_connection(("127.0.0.1", lport), timeout=10))
        host.seen(b'+QIURC: "incoming full"\r\n')
        clients[1].settimeout(10)
        assert clients[1].recv(10) == b""                       # dropped
        assert host.at("AT+QICLOSE=3") == OK
        assert host.at("AT+QISTATE=1,0") == (
            f'\r\n+QISTATE: 0,"TCP INCOMING","127.0.0.1",{me},{lport},2,1,3,0,"usbmodem"\r\n'.encode() + OK)
        for cid in (0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11):
            assert host.at(f"AT+QICLOSE={cid},0") == OK
    finally:
        for c in clients:
            c.close()
        peer.close()


def test_a_clients_local_port_is_shown_but_not_bound(emulator, online, tcp_echo):
    """TCP/UDP sockets: "A client's `<local_port>` is shown by AT+QISTATE but not bound (the
    emulator's real local port is on the loopback side of the route, meaningless to the
    host)"."""
    host, _, _ = online
    lport = free_port()
    qiopen(host, 1, local_port=lport)
    state = host.at("AT+QISTATE=1,1")
    assert re.fullmatch(rb'\r\n\+QISTATE: 1,"TCP","[\d.]+",%d,%d,2,1,1,0,"usbmodem"\r\n\r\nOK\r\n'
                        % (TCP_PORT, lport), state), state
    with socket.socket() as s:                                  # the port is still free here
        s.bind(("127.0.0.1", lport))
    assert host.at("AT+QICLOSE=1,0") == OK


def test_qiclose_waits_its_default_10_s_for_a_silent_peer_then_ok(emulator, online):
    """TCP/UDP sockets: "**AT+QICLOSE** ...: timeout 0–65535 s, default 10; a peer still open
    then is dropped, still OK" (on the modem clock)."""
    host, advance, _ = online
    peer = silent_peer()
    try:
        emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", peer.getsockname()[1])
        qiopen(host, 0)
        host.write(b"AT+QICLOSE=0\r")
        advance(9.5)
        assert host.quiet_for(0.3) == b""
        advance(0.6)
        assert host.read_until(FINAL) == OK
        assert host.at("AT+QISTATE=1,0") == OK
        assert host.at("AT+QICLOSE=0,65536") == b"\r\nERROR\r\n"
    finally:
        peer.close()


def test_qird_on_a_push_socket_is_572_but_the_query_works(emulator, online, tcp_echo):
    """TCP/UDP sockets: AT+QIRD "On a push or transparent socket ERROR 572, but the `,0` query
    works in every mode"."""
    host, _, _ = online
    qiopen(host, 0, mode=1)
    host.write(b"AT+QISEND=0,2\r")
    host.read_until(b"> ")
    host.write(b"hi")
    host.seen(b'+QIURC: "recv",0,2\r\nhi\r\n')
    host.pending.clear()
    assert host.at("AT+QIRD=0,10") == b"\r\nERROR\r\n"
    assert error_code(host) == 572
    assert host.at("AT+QIRD=0,0") == b"\r\n+QIRD: 2,2,0\r\n" + OK
    assert host.at("AT+QICLOSE=0,0") == OK


def test_qisde_and_qicfg_come_back_to_their_defaults_at_a_reboot(online):
    """TCP/UDP sockets: AT+QISDE "default 1, back to 1 at a reboot"; AT+QICFG "Not saved: a
    restart (AT+CFUN=1,1) brings the defaults back"; "`"tcp/keepalive",0` needs no times, `1`
    needs all three"; "an unknown name, a missing or extra value ... is a plain ERROR
    (AT+QIGETERROR 552), the setting unchanged. The name is taken in any case."""
    host, advance, _ = online
    assert host.at('AT+QISDE=0;+QICFG="Transwaittm",7;+QICFG="tcp/keepalive",1,30,50,5') == OK
    assert host.at('AT+QICFG="tcp/keepalive",1') == b"\r\nERROR\r\n"
    assert error_code(host) == 552
    assert host.at('AT+QICFG="tcp/keepalive",1,30,50,5,1') == b"\r\nERROR\r\n"   # extra value
    assert host.at('AT+QICFG="TCP/KEEPALIVE"') == b'\r\n+QICFG: "tcp/keepalive",1,30,50,5\r\n' + OK
    assert host.at('AT+QICFG="tcp/keepalive",0') == OK
    assert host.at('AT+QISDE?;+QICFG="transwaittm"') == (
        b'\r\n+QISDE: 0\r\n\r\n+QICFG: "transwaittm",7\r\n' + OK)
    reboot(host, advance)
    assert host.at('AT+QISDE?;+QICFG="transwaittm";+QICFG="tcp/keepalive"') == (
        b'\r\n+QISDE: 1\r\n\r\n+QICFG: "transwaittm",2\r\n\r\n+QICFG: "tcp/keepalive",0\r\n' + OK)


def test_udp_service_push_urc_names_the_sender(online):
    """TCP/UDP sockets: "a UDP SERVICE's push URC adds `,"<ip>",<port>`"; "Remote IPs are
    quoted"."""
    host, _, _ = online
    lport = free_port(socket.SOCK_DGRAM)
    qiopen(host, 5, "UDP SERVICE", "127.0.0.1", 0, local_port=lport, mode=1)
    peer = udp_peer()
    try:
        peer.sendto(b"ping", ("127.0.0.1", lport))
        me = peer.getsockname()[1]
        assert host.seen(re.compile(rb'\+QIURC: "recv",5,[^\r]*\r\n')) == \
            f'+QIURC: "recv",5,4,"127.0.0.1",{me}\r\n'.encode()
        assert host.read_exactly(4) == b"ping"
        assert host.read_exactly(2) == b"\r\n"              # the push's end
    finally:
        peer.close()
    assert host.at("AT+QICLOSE=5") == OK


# =========================================================================================
# DNS, ping, NTP, packet domain
# =========================================================================================

def test_qidnscfg_written_while_inactive_then_forgotten_at_a_reboot(ec2x_timed):
    """DNS: AT+QIDNSCFG "Reading on an inactive context is 561"; "Defaults are the profile's
    `pdp.dns` (EC2x "123.66.165.1","123.66.165.2" ...)"; "Writes are accepted while inactive
    and forgotten at AT+CFUN=1,1"."""
    host, advance, _ = ec2x_timed
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIDNSCFG=1,"9.9.9.9","1.0.0.1"') == OK
    assert host.at("AT+QIDNSCFG=1") == cme(561)
    assert host.at("AT+QIACT=1") == OK
    assert host.at("AT+QIDNSCFG=1") == b'\r\n+QIDNSCFG: 1,"9.9.9.9","1.0.0.1"\r\n' + OK
    reboot(host, advance)
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
    assert host.at("AT+QIDNSCFG=1") == b'\r\n+QIDNSCFG: 1,"123.66.165.1","123.66.165.2"\r\n' + OK


def test_qidnscfg_does_not_define_a_context_and_refuses_zone_indexes(online):
    """DNS: "AT+QIDNSCFG refuses addresses with a zone index (552); it does not define the
    context (the servers are kept per context id until a reboot)"."""
    host, _, _ = online
    assert host.at('AT+QIDNSCFG=3,"1.2.3.4"') == OK
    assert host.at("AT+CGDCONT?") == b'\r\n+CGDCONT: 1,"IP","UNINET","0.0.0.0",0,0,0,0\r\n' + OK
    assert host.at('AT+QIDNSCFG=1,"fe80::1%eth0"') == cme(552)
    assert error_code(host) == 552
    assert host.at("AT+QIDNSCFG=1") == b'\r\n+QIDNSCFG: 1,"123.66.165.1","123.66.165.2"\r\n' + OK


def test_immediate_errors_follow_cmee_and_qigeterror(online):
    """DNS: "Immediate failures of AT+QIDNSGIP / AT+QPING / AT+QNTP / AT+QIDNSCFG answer
    `+CME ERROR: <err>` ...; AT+QIGETERROR reports the same code; `AT+CMEE=0` gives a plain
    ERROR, `AT+CMEE=2` the error text"; AT+QPING "timeout 1–255 s ...; pingnum 1–10"."""
    host, _, _ = online
    for line in ('AT+QPING=1,"127.0.0.1",256', 'AT+QPING=1,"127.0.0.1",0',
                 'AT+QPING=1,"127.0.0.1",4,11', 'AT+QPING=1,"127.0.0.1",4,0'):
        assert host.at(line) == cme(552), line
        assert error_code(host) == 552
    assert host.at('AT+CMEE=0;+QIDNSGIP=2,"a.example"') == b"\r\nERROR\r\n"
    assert error_code(host) == 561
    assert host.at('AT+CMEE=2;+QNTP=2,"127.0.0.1"') == b"\r\n+CME ERROR: open PDP context failed\r\n"


def test_urc_failures_do_not_change_qigeterror(online):
    """DNS: "Failures these commands report by URC (565, 569, 561) do not change
    AT+QIGETERROR (it reports the last command's immediate result)"; offline lookups are
    565."""
    host, _, _ = online
    assert host.at("AT+QIRD=9,0") == b"\r\nERROR\r\n"            # something non-zero first
    assert host.at('AT+QIDNSGIP=1,"unknown.invalid"') == OK
    host.seen(b'+QIURC: "dnsgip",565\r\n')
    assert error_code(host) == 0                                # the command itself succeeded


def test_cgatt_0_reads_cgreg_cereg_0_keeps_creg_and_sends_no_pdpdeact(emulator, online, tcp_echo):
    """Packet domain: "`AT+CGATT=0` acts as AT+QIDEACT on every context: sockets report
    "closed", with no `+QIURC: "pdpdeact"` ...; CGREG and CEREG then read 0, CREG keeps its
    value"."""
    host, _, _ = online
    qiopen(host, 0)
    assert host.at("AT+CGATT=0") == OK
    host.seen(b'+QIURC: "closed",0\r\n')
    assert host.at("AT+CREG?;+CGREG?;+CEREG?") == (
        b"\r\n+CREG: 0,1\r\n\r\n+CGREG: 0,0\r\n\r\n+CEREG: 0,0\r\n" + OK)
    assert b"pdpdeact" not in host.transcript
    assert host.at("AT+QIACT?") == OK
    assert host.at("AT+QICLOSE=0") == OK


def test_cgcontrdp_and_cgpaddr_formats(online):
    """Packet domain: "`AT+CGPADDR` follows 27.007 §10.1.14 (`+CGPADDR: 1,"10.7.157.1"`,
    "0.0.0.0" while inactive). `AT+CGCONTRDP` ...: `+CGCONTRDP: <cid>,<cid+4>,"<apn>",
    "<addr>.255.255.255.0","<gw>","<dns1>","<dns2>"`"."""
    host, _, _ = online
    out = host.at("AT+CGCONTRDP=1")
    assert re.fullmatch(rb'\r\n\+CGCONTRDP: 1,5,"UNINET","10\.7\.157\.1\.255\.255\.255\.0","[\d.]+",'
                        rb'"123\.66\.165\.1","123\.66\.165\.2"\r\n\r\nOK\r\n', out), out
    assert host.at("AT+CGPADDR=1") == b'\r\n+CGPADDR: 1,"10.7.157.1"\r\n' + OK
    assert host.at("AT+QIDEACT=1") == OK
    assert host.at("AT+CGPADDR=1") == b'\r\n+CGPADDR: 1,"0.0.0.0"\r\n' + OK


def test_cops_format_only_manual_fallback_and_radio_off(ec2x_timed):
    """Packet domain: AT+COPS "3 sets only the format the read form uses; 4 manual, else
    automatic (the read form says 1 or 0, whichever it became). Radio off (AT+CFUN 0/4):
    +CME ERROR: 30"; "`AT+COPS?` reads `+COPS: <mode>` while not registered"."""
    host, _, _ = ec2x_timed
    assert host.at("AT+COPS=3,2;+COPS?") == b'\r\n+COPS: 0,2,"46001",7\r\n' + OK
    assert host.at('AT+COPS=4,2,"46002";+COPS?') == b'\r\n+COPS: 0,2,"46001",7\r\n' + OK
    assert host.at('AT+COPS=4,2,"46001";+COPS?') == b'\r\n+COPS: 1,2,"46001",7\r\n' + OK
    assert host.at('AT+COPS=1,2,"46002"') == cme(30)
    assert host.at("AT+CFUN=4") == OK
    assert host.at("AT+COPS=0") == cme(30)
    assert host.at("AT+COPS?") == b"\r\n+COPS: 1\r\n" + OK


def test_a_routed_name_reads_as_one_address_in_dnsgip_qistate_and_qping(emulator, online):
    """DNS: AT+QIDNSGIP "a name the Router knows (its `--dns` entry, else the address it shows
    for a route)" with `+QIURC: "dnsgip",0,<n>,600`; TCP/UDP sockets: AT+QISTATE "A dialled
    name shows as the modem's DNS answer"; AT+QPING "a reply is `+QPING: 0,"<ip>",32,<ms>,255`
    ... A host the Router knows ... replies after its RTT (... default 20 ms)"."""
    host, advance, _ = online
    peer = silent_peer()
    try:
        emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", peer.getsockname()[1])
        assert host.at(f'AT+QIDNSGIP=1,"{TCP_HOST}"') == OK
        assert host.seen(b'+QIURC: "dnsgip",0,1,600\r\n')
        ip = re.search(rb'\+QIURC: "dnsgip","([\d.]+)"\r\n',
                       host.seen(re.compile(rb'\+QIURC: "dnsgip","[\d.]+"\r\n'))).group(1)
        qiopen(host, 0)
        assert host.at("AT+QISTATE=1,0").startswith(b'\r\n+QISTATE: 0,"TCP","%s",%d,' % (ip, TCP_PORT))
        assert host.at(f'AT+QPING=1,"{TCP_HOST}",4,1') == OK
        advance(0.1)
        assert host.seen(re.compile(rb"\+QPING: 0,\"[^\r]*\r\n")) == b'+QPING: 0,"%s",32,20,255\r\n' % ip
        assert host.seen(re.compile(rb"\+QPING: 0,\d[^\r]*\r\n")) == b"+QPING: 0,1,1,0,20,20,20\r\n"
        assert host.at("AT+QICLOSE=0,0") == OK
    finally:
        peer.close()


def test_udp_service_destinations_offline(online):
    """TCP/UDP sockets: AT+QISEND "a UDP SERVICE needs `,"<ip>",<port>`"; UDP: "A UDP SERVICE
    sends to a routed address, else to an IP literal; with `--offline` only loopback is
    reachable, anything else is SEND FAIL. An IPv6 destination is SEND FAIL too"; "the socket
    stays open"."""
    host, _, _ = online
    qiopen(host, 2, "UDP SERVICE", "127.0.0.1", 0, local_port=free_port(socket.SOCK_DGRAM))
    assert host.at("AT+QISEND=2,3") == b"\r\nERROR\r\n"
    assert error_code(host) == 552
    for dst in ('"8.8.8.8",53', '"::1",53'):
        host.write(f"AT+QISEND=2,3,{dst}\r")
        assert host.read_until(re.compile(rb"> |\r\nERROR\r\n")) == b"\r\n> "
        host.write(b"abc")
        assert host.read_until(re.compile(rb"\r\n(SEND OK|SEND FAIL|ERROR)\r\n")) == b"\r\nSEND FAIL\r\n", dst
    peer = udp_peer()
    try:
        me = peer.getsockname()[1]
        host.write(f'AT+QISEND=2,3,"127.0.0.1",{me}\r')
        assert host.read_until(b"> ") == b"\r\n> "
        host.write(b"abc")
        assert host.read_until(re.compile(rb"\r\n(SEND OK|SEND FAIL)\r\n")) == b"\r\nSEND OK\r\n"
        assert peer.recvfrom(10)[0] == b"abc"
    finally:
        peer.close()
    assert host.at("AT+QICLOSE=2") == OK
