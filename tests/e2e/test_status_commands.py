"""The status commands host drivers send to an EC2x (and the 3GPP ones to an ML302) that
answered ERROR before (emulator/commands/status.py): AT+QENG="servingcell" / "neighbourcell"
(TinyGSM-style cell reports, Sixfab, openpilot's network info), AT+CEER (what a driver logs
after a failed activation) and AT+CGEREP with its +CGEV URCs (emulator/modem/packet_events.py).
Exact bytes, as the host reads them (CR LF lines, ATE0)."""
from __future__ import annotations

import pytest

from tests.e2e.profile_support import EC2X, load_error_of_edit
from tests.e2e.socket_support import TCP_HOST, TCP_PORT, escape

OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"

# The EC2x profile's cell: CHN-UNICOM 46001, band 3 EARFCN 1650, AT+CSQ 24 (-65 dBm)
SERVING = '"LTE","FDD",460,01,8A21B03,226,1650,3,5,5,D5D5,-94,-9,-65,8,30'
NEIGHBOURS = ('+QENG: "neighbourcell intra","LTE",1650,311,-18,-103,-65,-20,21,5,14,6,62',
              '+QENG: "neighbourcell inter","LTE",100,37,-13,-101,-68,-20,23,3,8,10')


def answer(*lines: str) -> bytes:
    """One command's information lines (one frame) and OK."""
    return b"\r\n" + "\r\n".join(lines).encode() + b"\r\n" + OK


def urcs(*lines: str) -> bytes:
    return b"".join(b"\r\n" + line.encode() + b"\r\n" for line in lines)


def serving(state: str) -> bytes:
    return answer(f'+QENG: "servingcell","{state}",{SERVING}')


SEARCH = answer('+QENG: "servingcell","SEARCH"')


# -- AT+QENG ------------------------------------------------------------------------------------
def test_qeng_serving_and_neighbour_cells_agree_with_the_other_status_commands(ec2x):
    assert ec2x.at('AT+QENG="servingcell"') == serving("NOCONN")
    assert ec2x.at('AT+QENG="neighbourcell"') == answer(*NEIGHBOURS)
    # the same cell and figures as AT+QCSQ (RSRP -94, SINR 8.4 dB = 142 in its 1/5 dB steps,
    # RSRQ -9, RSSI -65), AT+QNWINFO (band 3, 1650), AT+COPS numeric and AT+CEREG=2
    assert ec2x.at("AT+QCSQ") == answer('+QCSQ: "LTE",-65,-94,142,-9')
    assert ec2x.at("AT+QNWINFO") == answer('+QNWINFO: "FDD LTE","46001","LTE BAND 3",1650')
    assert ec2x.at("AT+CEREG=2;+CEREG?") == answer('+CEREG: 2,1,"D5D5","8A21B03",7')
    assert ec2x.at("AT+QENG=?") == answer('+QENG: ("servingcell","neighbourcell")')
    assert ec2x.at('AT+QENG="SERVINGCELL"') == serving("NOCONN")       # any case, as AT+QCFG's items
    assert ec2x.at("AT+QENG=servingcell") == serving("NOCONN")


@pytest.mark.parametrize("line", ['AT+QENG="cell"', 'AT+QENG="servingcell",1', "AT+QENG=1", "AT+QENG",
                                  "AT+QENG?", 'AT+QENG=""', 'AT+QENG="neighbourcell",'])
def test_qeng_refuses_what_the_module_refuses(ec2x, line):
    assert ec2x.at(line) == ERROR


def test_qeng_state_follows_the_radio_and_the_registration(ec2x, emulator):
    assert ec2x.at("AT+CFUN=4") == OK                            # radio off: no cell
    assert ec2x.at('AT+QENG="servingcell"') == SEARCH
    assert ec2x.at('AT+QENG="neighbourcell"') == OK              # nothing measured
    assert ec2x.at("AT+CFUN=1") == OK
    assert ec2x.at('AT+QENG="servingcell"') == serving("NOCONN")
    assert ec2x.at("AT+CGATT=0") == OK                           # camped, detached from the PS domain
    assert ec2x.at('AT+QENG="servingcell"') == serving("LIMSRV")
    assert ec2x.at('AT+QENG="neighbourcell"') == answer(*NEIGHBOURS)
    assert ec2x.at("AT+CGATT=1") == OK
    assert emulator.control("register", stat=3) == {"ok": True}  # denied: limited service
    assert ec2x.at('AT+QENG="servingcell"') == serving("LIMSRV")
    assert emulator.control("register", stat=2) == {"ok": True}  # searching
    assert ec2x.at('AT+QENG="servingcell"') == SEARCH
    assert emulator.control("register", stat=5) == {"ok": True}  # roaming: registered
    assert ec2x.at('AT+QENG="servingcell"') == serving("NOCONN")
    assert ec2x.at("AT+COPS=2") == OK                            # deregistered by the host
    assert ec2x.at('AT+QENG="servingcell"') == SEARCH


def test_a_three_digit_mnc_is_shown_whole(tmp_path, open_modem):
    path = tmp_path / "us.toml"
    path.write_text(EC2X.replace('# plmn = "46001"', 'plmn = "310260"', 1))
    host, _ = open_modem(str(path))
    assert host.at('AT+QENG="servingcell"') == serving("NOCONN").replace(b"460,01,", b"310,260,")


def test_the_ml302_has_the_3gpp_status_commands_but_not_qeng(ml302):
    for line in ('AT+QENG="servingcell"', "AT+QENG=?"):
        assert ml302.at(line) == ERROR, line
    assert ml302.at("AT+CEER") == answer('+CEER: "No cause information available"')
    assert ml302.at("AT+CGEREP=?") == answer("+CGEREP: (0-2),(0,1)")
    assert ml302.at("AT+CGEREP=1;+CGEREP?") == answer("+CGEREP: 1,0")
    assert ml302.at('AT+CGDCONT=1,"IP","CMNET"') == OK
    assert ml302.at("AT+CGACT=1,1") == answer("+CGACT: 1, 1, 10.127.79.43")
    assert ml302.read_until(b"+CGEV: ME PDN ACT 1\r\n") == urcs("+CGEV: ME PDN ACT 1")
    assert ml302.at("AT+CGACT=0,1") == OK
    assert ml302.read_until(b"+CGEV: ME PDN DEACT 1\r\n") == urcs("+CGEV: ME PDN DEACT 1")
    assert ml302.at("AT+CEER") == answer('+CEER: "Regular deactivation"')


# -- AT+CEER ------------------------------------------------------------------------------------
def ceer(text: str) -> bytes:
    return answer(f'+CEER: "{text}"')


def test_ceer_reports_the_last_failed_activation_or_deactivation(ec2x, emulator):
    assert ec2x.at("AT+CEER") == ceer("No cause information available")
    assert ec2x.at("AT+CEER=?") == OK
    assert ec2x.at("AT+CEER?") == ERROR
    assert ec2x.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
    assert ec2x.at("AT+CEER") == ceer("No cause information available")     # a success is no cause
    assert ec2x.at("AT+QIDEACT=1") == OK
    assert ec2x.at("AT+CEER") == ceer("Regular deactivation")
    assert ec2x.at("AT+CFUN=4") == OK
    assert ec2x.at("AT+QIACT=1") == ERROR
    assert ec2x.at("AT+CEER") == ceer("Phone is offline")
    assert ec2x.at("AT+CFUN=1") == OK
    assert emulator.control("register", stat=2) == {"ok": True}
    assert ec2x.at("AT+CGACT=1,1") == ERROR
    assert ec2x.at("AT+CEER") == ceer("No service available")
    assert ec2x.at("AT+CGATT=1") == ERROR                        # an attach refused too
    assert ec2x.at("AT+CEER") == ceer("No service available")
    assert emulator.control("register", stat=1) == {"ok": True}
    assert ec2x.at("AT+QIACT=1") == OK
    assert emulator.control("pdp_deact", cid=1) == {"ok": True}  # the network's deactivation
    assert ec2x.read_until(b'+QIURC: "pdpdeact",1\r\n') == urcs('+QIURC: "pdpdeact",1')
    assert ec2x.at("AT+CEER") == ceer("Regular deactivation")
    assert ec2x.at("AT+QIDEACT=1;+CGATT=0;+CGATT=1") == OK      # (none active: nothing new)
    assert ec2x.at("AT+CEER") == ceer("Regular deactivation")
    assert ec2x.at("AT+QIACT=1") == OK
    assert emulator.control("register", stat=0) == {"ok": True}  # the registration lost with it
    assert ec2x.read_until(b'+QIURC: "pdpdeact",1\r\n') == urcs('+QIURC: "pdpdeact",1')
    assert ec2x.at("AT+CEER") == ceer("PDP lowerlayer error")
    assert ec2x.at("AT+CFUN=1,1") == OK                          # a restart forgets it
    ec2x.read_until(b"+QIND: PB DONE\r\n")
    assert ec2x.at("ATE0") == b"ATE0\r" + OK
    assert ec2x.at("AT+CEER") == ceer("No cause information available")


# -- AT+CGEREP and +CGEV ---------------------------------------------------------------------------
@pytest.mark.parametrize("line", ["AT+CGEREP=3", "AT+CGEREP=1,2", "AT+CGEREP=-1", 'AT+CGEREP="1"',
                                  "AT+CGEREP=1,0,0", "AT+CGEREP=", "AT+CGEREP=,1", "AT+CGEREP"])
def test_cgerep_refuses_values_out_of_range(ec2x, line):
    assert ec2x.at(line) == ERROR
    assert ec2x.at("AT+CGEREP?") == answer("+CGEREP: 0,0")


def test_cgerep_settings_read_back(ec2x):
    assert ec2x.at("AT+CGEREP=?") == answer("+CGEREP: (0-2),(0,1)")
    assert ec2x.at("AT+CGEREP?") == answer("+CGEREP: 0,0")
    assert ec2x.at("AT+CGEREP=2;+CGEREP?") == answer("+CGEREP: 2,0")
    assert ec2x.at("AT+CGEREP=1,1;+CGEREP?") == answer("+CGEREP: 1,1")
    assert ec2x.at("AT+CGEREP=0;+CGEREP?") == answer("+CGEREP: 0,0")


def test_cgev_urcs_of_the_host_and_the_network(ec2x, emulator):
    assert ec2x.at("AT+CGEREP=1") == OK
    assert ec2x.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
    assert ec2x.read_until(b"ACT 1\r\n") == urcs("+CGEV: ME PDN ACT 1")      # after the OK
    assert ec2x.at("AT+QIDEACT=1") == OK
    assert ec2x.read_until(b"DEACT 1\r\n") == urcs("+CGEV: ME PDN DEACT 1")
    assert ec2x.at("AT+QIDEACT=1") == OK                                     # inactive: no event
    assert ec2x.at("AT+QIACT=1") == OK
    assert ec2x.read_until(b"ACT 1\r\n") == urcs("+CGEV: ME PDN ACT 1")
    assert emulator.control("pdp_deact", cid=1) == {"ok": True}
    assert ec2x.read_until(b'"pdpdeact",1\r\n') == urcs("+CGEV: NW PDN DEACT 1", '+QIURC: "pdpdeact",1')
    assert ec2x.at("AT+QIACT=1") == OK
    assert ec2x.read_until(b"ACT 1\r\n") == urcs("+CGEV: ME PDN ACT 1")
    assert ec2x.at("AT+CGATT=0") == OK                            # the host detaches
    assert ec2x.read_until(b"DETACH\r\n") == urcs("+CGEV: ME PDN DEACT 1", "+CGEV: ME DETACH")
    assert ec2x.at("AT+CGATT=0") == OK                            # already detached: nothing
    assert ec2x.at("AT+CGATT=1;+QIACT=1") == OK
    assert ec2x.read_until(b"ACT 1\r\n") == urcs("+CGEV: ME PDN ACT 1")
    assert emulator.control("register", stat=0) == {"ok": True}  # the network drops the module
    assert ec2x.read_until(b"DETACH\r\n") == urcs("+CGEV: NW PDN DEACT 1", '+QIURC: "pdpdeact",1',
                                                   "+CGEV: NW DETACH")
    assert emulator.control("register", stat=1) == {"ok": True}
    assert ec2x.at("AT+QIACT=1") == OK
    assert ec2x.read_until(b"ACT 1\r\n") == urcs("+CGEV: ME PDN ACT 1")
    assert ec2x.at("AT+CFUN=4") == OK                             # the radio off: the host's doing
    assert ec2x.read_until(b"DETACH\r\n") == urcs("+CGEV: ME PDN DEACT 1", "+CGEV: ME DETACH")
    assert ec2x.at("AT+CFUN=1") == OK
    assert ec2x.at("AT+COPS=2") == OK                             # deregistered: no context to lose
    assert ec2x.read_until(b"DETACH\r\n") == urcs("+CGEV: ME DETACH")
    assert ec2x.at("AT+COPS=0") == OK
    assert ec2x.quiet_for(0.3) == b""


def test_cgerep_0_keeps_the_codes_until_bfr_1_writes_them_after_the_ok(ec2x, emulator):
    assert ec2x.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK     # <mode> 0: kept
    assert emulator.control("pdp_deact", cid=1) == {"ok": True}
    assert ec2x.read_until(b'"pdpdeact",1\r\n') == urcs('+QIURC: "pdpdeact",1')
    assert ec2x.quiet_for(0.2) == b""
    assert ec2x.at("AT+CGEREP=2,1") == OK                        # then what was kept
    assert ec2x.read_until(b"DEACT 1\r\n") == urcs("+CGEV: ME PDN ACT 1", "+CGEV: NW PDN DEACT 1")
    assert ec2x.at("AT+CGEREP=0") == OK
    assert ec2x.at("AT+QIACT=1;+QIDEACT=1") == OK
    assert ec2x.at("AT+CGEREP=1,0") == OK                        # <bfr> 0: the kept ones are dropped
    assert ec2x.at("AT+CGEREP=0;+CGEREP=1,1") == OK
    assert ec2x.quiet_for(0.2) == b""


def test_a_restart_sets_cgerep_back_to_0(ec2x):
    assert ec2x.at("AT+CGEREP=2,1") == OK
    assert ec2x.at("AT+CFUN=1,1") == OK
    ec2x.read_until(b"+QIND: PB DONE\r\n")
    assert ec2x.at("ATE0") == b"ATE0\r" + OK
    assert ec2x.at("AT+CGEREP?") == answer("+CGEREP: 0,0")


@pytest.mark.parametrize("mode, kept", [(1, False), (2, True)])
def test_cgerep_1_drops_the_codes_online_data_mode_holds_and_2_writes_them_after(
        open_modem, emulator, tcp_echo, mode, kept):
    host, port = open_modem("ec2x", manual_time=True)
    advance = emulator.advancer(port, host)
    assert host.at(f'AT+QICFG="transwaittm",0;+CGEREP={mode}') == OK
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1;+QICSGP=2,1,"B","","",1;+QIACT=2') == OK
    assert host.read_until(b"ACT 2\r\n") == urcs("+CGEV: ME PDN ACT 1", "+CGEV: ME PDN ACT 2")
    host.write(f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,2\r')
    assert host.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
    assert emulator.control("pdp_deact", cid=2) == {"ok": True}  # context 2 (not the link's)
    assert escape(host, advance) == OK
    held = urcs("+CGEV: NW PDN DEACT 2") if kept else b""
    assert host.read_until(b'"pdpdeact",2\r\n') == held + urcs('+QIURC: "pdpdeact",2')
    assert host.at("AT+QICLOSE=0") == OK


# -- the profile --------------------------------------------------------------------------------
@pytest.mark.parametrize("edit, message", [
    (("[cell]\n", "[cellx]\n"), "unknown section [cellx]"),
    (('id = "8A21B03"', 'id = "8a21b03"'), "key cell.id: must be 1-7 upper-case hex digits"),
    (("pci = 226", "pci = 504"), "key cell.pci: must be in 0..503"),
    (('duplex = "FDD"', 'duplex = "HDX"'), "key cell.duplex: must be one of 'FDD', 'TDD'"),
    (("sinr = 8.4", "sinr = 31"), "key cell.sinr: must be in -20..30"),
    (("sinr = 8.4  ", "# sinr = 8.4"), "key network.qcsq: uses {sinr}, which needs cell.sinr"),
    (("srxlev = 30 ", "# srxlev = 30"), "[commands] lists +QENG, which needs cell.srxlev"),
    (('none = "No cause information available"', "# none"), "[commands] lists +CEER, which needs ceer.none"),
    (('report = \'"{text}"\'', "report = '{cause}'"), "key ceer.report: '{cause}' must use only {text}"),
    (('nw_detach = "+CGEV: NW DETACH"', "# nw"), "[commands] lists +CGEREP, which needs cgev.nw_detach"),
    (('me_pdn_act = "+CGEV: ME PDN ACT {cid}"', 'me_pdn_act = "+CGEV: ME PDN ACT {id}"'),
     "key cgev.me_pdn_act: '+CGEV: ME PDN ACT {id}' must use only {cid}"),
])
def test_the_cell_ceer_and_cgev_tables_are_checked_at_load(tmp_path, edit, message):
    error = load_error_of_edit(tmp_path, *edit)
    assert error.startswith(message), error


def test_a_profile_without_a_cell_keeps_the_fixed_location_and_its_own_qcsq(tmp_path, open_modem):
    """A user profile from before [cell]: no AT+QENG, AT+CEREG=2's fixed location fields, an
    AT+QCSQ template with its own figures."""
    start, end = EC2X.index("[cell]\n"), EC2X.index("[ceer]\n")
    text = (EC2X[:start] + EC2X[end:]).replace("qcsq = '\"LTE\",{rssi},{rsrp},{sinr},{rsrq}'",
                                               "qcsq = '\"LTE\",{rssi},-90,150,-8'")
    text = "".join(line for line in text.splitlines(keepends=True) if not line.startswith('"+QENG"'))
    path = tmp_path / "old.toml"
    path.write_text(text)
    host, _ = open_modem(str(path))
    assert host.at("AT+QCSQ") == answer('+QCSQ: "LTE",-65,-90,150,-8')
    assert host.at("AT+CEREG=2;+CEREG?") == answer('+CEREG: 2,1,"D5D5","8A21B03",7')
    assert host.at('AT+QENG="servingcell"') == ERROR
