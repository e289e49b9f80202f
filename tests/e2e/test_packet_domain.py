"""3GPP packet domain on the EC2x: AT+CGDCONT / AT+CGACT in the EC25 manual's format on
the one PDP table AT+QICSGP / AT+QIACT use, AT+CGATT (detach closes sockets), AT+CGPADDR,
AT+CGCONTRDP, and +CREG/+CGREG/+CEREG URCs when the registration changes (the control
API's "register", scenario files, AT+CFUN, AT+CGATT)."""
from __future__ import annotations

import pytest

from emulator.tools.scenario import ScenarioError
from tests.e2e.ssl_options_support import last_error

OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"
HOST = "echo.example"            # routed to the `echo` fixture's server


def _open(host, client_id: int = 1) -> None:
    assert host.at(f'AT+QSSLOPEN=1,1,{client_id},"{HOST}",443,0') == OK
    host.seen(f"+QSSLOPEN: {client_id},0\r\n".encode(), timeout=5)


def test_cgdcont_and_qicsgp_are_one_table(ec2x):
    assert ec2x.at('AT+QICSGP=1,1,"UNINET","","",1') == OK
    assert ec2x.at("AT+CGDCONT?") == b'\r\n+CGDCONT: 1,"IP","UNINET","0.0.0.0",0,0,0,0\r\n\r\nOK\r\n'
    assert ec2x.at('AT+CGDCONT=2,"IPV4V6","ims"') == OK
    assert ec2x.at("AT+QICSGP=2") == b'\r\n+QICSGP: 3,"ims","","",0\r\n\r\nOK\r\n'
    assert ec2x.at("AT+CGDCONT?") == (b'\r\n+CGDCONT: 1,"IP","UNINET","0.0.0.0",0,0,0,0\r\n'
                                      b'+CGDCONT: 2,"IPV4V6","ims","0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0",0,0,0,0\r\n'
                                      b"\r\nOK\r\n")
    assert ec2x.at("AT+CGDCONT=?") == (b'\r\n+CGDCONT: (1-16),"IP",,,(0-2),(0-4),(0-1),(0-1)\r\n'
                                       b'+CGDCONT: (1-16),"IPV6",,,(0-2),(0-4),(0-1),(0-1)\r\n'
                                       b'+CGDCONT: (1-16),"IPV4V6",,,(0-2),(0-4),(0-1),(0-1)\r\n'
                                       b"\r\nOK\r\n")
    assert ec2x.at('AT+CGDCONT=1,"X25"') == ERROR


def test_qicsgp_with_authentication_omitted_keeps_the_previous_one(ec2x):
    """A real UC15 session quoted in a Quectel OpenCPU test program: after
    +QICSGP: 1,"UNINET","","",1, AT+QICSGP=1,1,"abc","","" answers OK and the read shows
    +QICSGP: 1,"abc","","",1 -- the omitted <authentication> keeps its value (Quectel's
    convention for omitted optional parameters, docs/behaviour.md)."""
    assert ec2x.at('AT+QICSGP=1,1,"UNINET","","",1') == OK
    assert ec2x.at('AT+QICSGP=1,1,"abc","",""') == OK
    assert ec2x.at("AT+QICSGP=1") == b'\r\n+QICSGP: 1,"abc","","",1\r\n\r\nOK\r\n'
    assert ec2x.at('AT+QICSGP=1,1,"abc","","",0') == OK
    assert ec2x.at("AT+QICSGP=1") == b'\r\n+QICSGP: 1,"abc","","",0\r\n\r\nOK\r\n'


def test_cgact_and_qiact_are_one_state(ec2x):
    assert ec2x.at('AT+CGDCONT=1,"IP","CMNET"') == OK
    assert ec2x.at("AT+CGACT=1,1") == OK                         # no +CGACT line on the EC2x
    assert ec2x.at("AT+QIACT?") == b'\r\n+QIACT: 1,1,1,"10.7.157.1"\r\n\r\nOK\r\n'
    assert ec2x.at("AT+CGACT?") == b"\r\n+CGACT: 1,1\r\n\r\nOK\r\n"
    assert ec2x.at("AT+CGACT=1,1") == OK                         # active already: OK (27.007)
    assert ec2x.at("AT+CGPADDR=1") == b'\r\n+CGPADDR: 1,"10.7.157.1"\r\n\r\nOK\r\n'
    assert ec2x.at("AT+QIACT=2") == OK
    assert ec2x.at("AT+CGPADDR") == (b'\r\n+CGPADDR: 1,"10.7.157.1"\r\n+CGPADDR: 2,"10.7.157.2"\r\n'
                                     b"\r\nOK\r\n")
    assert ec2x.at("AT+CGPADDR=?") == b"\r\n+CGPADDR: (1,2)\r\n\r\nOK\r\n"
    assert ec2x.at("AT+QIDEACT=1") == OK
    assert ec2x.at("AT+CGACT?") == b"\r\n+CGACT: 1,0\r\n+CGACT: 2,1\r\n\r\nOK\r\n"
    assert ec2x.at("AT+CGPADDR=1,2") == (b'\r\n+CGPADDR: 1,"0.0.0.0"\r\n+CGPADDR: 2,"10.7.157.2"\r\n'
                                         b"\r\nOK\r\n")
    assert ec2x.at("AT+CGACT=0,1") == OK                         # inactive already: OK
    assert ec2x.at("AT+CGACT=0") == OK                           # every context
    assert ec2x.at("AT+QIACT?") == OK
    for bad in ("AT+CGACT=2,1", "AT+CGACT=1,17", "AT+CGPADDR=0", "AT+CGPADDR=x"):
        assert ec2x.at(bad) == ERROR, bad


def test_cgcontrdp_shows_the_dynamic_parameters(ec2x):
    assert ec2x.at("AT+CGCONTRDP") == OK                         # nothing active
    assert ec2x.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
    line = b'+CGCONTRDP: 1,5,"UNINET","10.7.157.1.255.255.255.0","10.7.157.2","123.66.165.1","123.66.165.2"'
    assert ec2x.at("AT+CGCONTRDP") == b"\r\n" + line + b"\r\n\r\nOK\r\n"
    assert ec2x.at("AT+CGCONTRDP=1") == b"\r\n" + line + b"\r\n\r\nOK\r\n"
    assert ec2x.at("AT+CGCONTRDP=2") == OK                       # defined nowhere / inactive
    assert ec2x.at("AT+CGCONTRDP=17") == ERROR


def test_cgatt_0_closes_ssl_sockets_without_pdpdeact(emulator, ec2x_on, echo):
    """A host-initiated detach is AT+QIDEACT on every context: each socket reports
    "closed"; +QIURC: "pdpdeact" is the network's word only."""
    host, _ = ec2x_on
    assert host.at("AT+CGATT?") == b"\r\n+CGATT: 1\r\n\r\nOK\r\n"
    _open(host, 1)
    assert host.at("AT+CGATT=0") == OK
    got = host.read_until(b'+QSSLURC: "closed",1\r\n', timeout=3)
    assert got == b'\r\n+QSSLURC: "closed",1\r\n' and b"pdpdeact" not in host.transcript
    assert host.at("AT+CGATT?") == b"\r\n+CGATT: 0\r\n\r\nOK\r\n"
    assert host.at("AT+QIACT?") == OK
    assert host.at("AT+CEREG?") == b"\r\n+CEREG: 0,0\r\n\r\nOK\r\n"   # PS detached
    assert host.at("AT+CREG?") == b"\r\n+CREG: 0,1\r\n\r\nOK\r\n"     # CS still registered
    assert host.at("AT+QSSLCLOSE=1") == OK
    assert host.at("AT+QIACT=1") == OK                               # attaches again first
    assert host.at("AT+CGATT?") == b"\r\n+CGATT: 1\r\n\r\nOK\r\n"
    assert host.at("AT+CGATT=0;+CGATT=1") == OK
    assert host.at("AT+QIACT?") == OK and host.at("AT+CGATT=?") == b"\r\n+CGATT: (0,1)\r\n\r\nOK\r\n"
    assert host.at("AT+CGATT=2") == ERROR


def test_network_deregistration_reports_urcs_and_drops_contexts(emulator, ec2x_on, echo):
    host, _ = ec2x_on
    assert host.at("AT+CEREG=1;+CGREG=2") == OK                       # AT+CREG stays 0: no URC
    _open(host, 1)
    assert emulator.control("register", stat=3)["ok"]                 # registration denied
    got = host.read_until(b'+QSSLURC: "closed",1\r\n', timeout=3)
    assert got == (b"\r\n+CGREG: 3\r\n\r\n+CEREG: 3\r\n"
                   b'\r\n+QIURC: "pdpdeact",1\r\n\r\n+QSSLURC: "closed",1\r\n'), got
    assert host.at("AT+CEREG?") == b"\r\n+CEREG: 1,3\r\n\r\nOK\r\n"
    assert host.at("AT+CGATT?") == b"\r\n+CGATT: 0\r\n\r\nOK\r\n"
    assert host.at("AT+QIACT=1") == ERROR and host.at("AT+CGACT=1,1") == ERROR
    assert host.at("AT+CGATT=1") == ERROR                             # nothing to attach to
    assert host.at("AT+COPS?") == b"\r\n+COPS: 0\r\n\r\nOK\r\n"            # no operator either
    assert emulator.control("state")["registration"] == {"stat": 3, "attached": False}
    assert emulator.control("register", stat=5)["ok"]                 # roaming
    assert host.read_until(b"+CEREG: 5\r\n", timeout=3) == \
        b'\r\n+CGREG: 5,"D5D5","8A21B03",7\r\n\r\n+CEREG: 5\r\n'
    assert host.at("AT+QIACT=1") == OK
    assert emulator.control("register", stat=5)["ok"]                 # no change: nothing said
    assert host.quiet_for(0.2) == b""
    for stat in (6, -1, "1", None):
        assert not emulator.control("register", stat=stat)["ok"]
    assert last_error(host) == 0


def test_registration_change_from_a_scenario_step(emulator, ec2x_on):
    host, port = ec2x_on
    assert host.at("AT+CEREG=2") == OK
    emulator.run_scenario({"step": [{"at": 1.0, "op": "register", "stat": 2},
                                    {"at": 2.0, "op": "register", "stat": 1}]})
    emulator.advance(port, 1)
    assert host.read_until(b"+CEREG: 2\r\n", timeout=3) == b"\r\n+CEREG: 2\r\n"
    assert host.read_until(b"pdpdeact\",1\r\n", timeout=3).endswith(b'\r\n+QIURC: "pdpdeact",1\r\n')
    assert host.at("AT+CGACT?") == b"\r\n+CGACT: 1,0\r\n\r\nOK\r\n"      # the network dropped it
    emulator.advance(port, 1)
    assert host.read_until(b"+CEREG: 1,\"D5D5\",\"8A21B03\",7\r\n", timeout=3) == \
        b'\r\n+CEREG: 1,"D5D5","8A21B03",7\r\n'
    assert host.at("AT+CGATT?") == b"\r\n+CGATT: 1\r\n\r\nOK\r\n"        # registered: attached again
    assert host.at("AT+QIACT=1") == OK and host.at("AT+CGACT?") == b"\r\n+CGACT: 1,1\r\n\r\nOK\r\n"
    with pytest.raises(ScenarioError, match="stat"):
        emulator.run_scenario({"step": [{"at": 1.0, "op": "register", "stat": 9}]})


def test_cfun_changes_the_registration_urcs(ec2x):
    assert ec2x.at("AT+CREG=1;+CEREG=1") == OK
    assert ec2x.at("AT+CFUN=4") == OK
    assert ec2x.read_until(b"+CEREG: 0\r\n", timeout=3) == b"\r\n+CREG: 0\r\n\r\n+CEREG: 0\r\n"
    assert ec2x.at("AT+CGATT?") == b"\r\n+CGATT: 0\r\n\r\nOK\r\n"
    assert ec2x.at("AT+CFUN=1") == OK
    assert ec2x.read_until(b"+CEREG: 1\r\n", timeout=3) == b"\r\n+CREG: 1\r\n\r\n+CEREG: 1\r\n"


def test_ml302_keeps_its_formats_and_gets_registration_urcs(emulator, open_modem):
    host, _ = open_modem("ml302")
    assert host.at('AT+CGDCONT=1,"IP","CMNET"') == OK
    assert host.at("AT+CGACT=1,1") == b"\r\n+CGACT: 1, 1, 10.127.79.43\r\n\r\nOK\r\n"
    assert host.at("AT+CGDCONT?") == b'\r\n+CGDCONT: 1,"IP","CMNET","10.127.79.43",0,0\r\n\r\nOK\r\n'
    assert host.at("AT+CGPADDR") == b'\r\n+CGPADDR: 1,"10.127.79.43"\r\n\r\nOK\r\n'   # (its drivers')
    for absent in ("AT+CGCONTRDP", 'AT+QPING=1,"x"', "AT+QIDNSCFG=1"):
        assert host.at(absent) == ERROR, absent
    assert host.at("AT+CEREG=1") == OK
    assert emulator.control("register", stat=0)["ok"]
    assert host.read_until(b"+CEREG: 0\r\n", timeout=3) == b"\r\n+CEREG: 0\r\n"
    assert host.at("AT+CGACT?") == b"\r\n+CGACT: 1,0\r\n\r\nOK\r\n"  # no URC of its own (manual)


def test_detach_and_deregistration_close_tcp_sockets_too(emulator, ec2x_on):
    """AT+QIOPEN sockets share the bearer: the same "closed" URCs as SSL sockets."""
    from emulator.testing.peers import TcpServer
    host, _ = ec2x_on
    with TcpServer("echo") as server:
        emulator.router.add_map("tcp.example", 7, "127.0.0.1", server.port)
        assert host.at('AT+QIOPEN=1,2,"TCP","tcp.example",7,0,0') == OK
        host.seen(b"+QIOPEN: 2,0\r\n", timeout=5)
        assert host.at("AT+CGATT=0") == OK
        host.seen(b'+QIURC: "closed",2\r\n', timeout=3)
        assert b"pdpdeact" not in host.transcript
        assert host.at("AT+QICLOSE=2;+QIACT=1") == OK
        assert host.at('AT+QIOPEN=1,3,"TCP","tcp.example",7,0,0') == OK
        host.seen(b"+QIOPEN: 3,0\r\n", timeout=5)
        assert emulator.control("register", stat=0)["ok"]
        host.seen(b'+QIURC: "pdpdeact",1\r\n', timeout=3)
        host.seen(b'+QIURC: "closed",3\r\n', timeout=3)


def test_cgdcont_with_only_a_cid_undefines_an_inactive_context(ec2x):
    """27.007 §10.1.1: AT+CGDCONT=<cid> makes the context's values undefined; an active
    context cannot be undefined (ERROR) until it is deactivated."""
    assert ec2x.at('AT+CGDCONT=3,"IP","iot.example"') == b"\r\nOK\r\n"
    assert b'+CGDCONT: 3,"IP","iot.example"' in ec2x.at("AT+CGDCONT?")
    assert ec2x.at("AT+CGDCONT=3") == b"\r\nOK\r\n"
    assert b"+CGDCONT: 3," not in ec2x.at("AT+CGDCONT?")
    assert ec2x.at('AT+QICSGP=3') == b'\r\n+QICSGP: 1,"","","",0\r\n\r\nOK\r\n'
    assert ec2x.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
    assert ec2x.at("AT+CGDCONT=1") == b"\r\nERROR\r\n"                # active
    assert b'+CGDCONT: 1,"IP","UNINET"' in ec2x.at("AT+CGDCONT?")
    assert ec2x.at("AT+QIDEACT=1") == b"\r\nOK\r\n"
    assert ec2x.at("AT+CGDCONT=1") == b"\r\nOK\r\n"
    assert b"+CGDCONT: 1," not in ec2x.at("AT+CGDCONT?")


def _profile_with_deact_urc(tmp_path, line: str):
    from emulator.modem.profile import PROFILE_DIR
    text = (PROFILE_DIR / "ec2x.toml").read_text()
    old = "deact_urc = '+QIURC: \"pdpdeact\",{cid}'"
    assert old in text
    path = tmp_path / "family.toml"
    path.write_text(text.replace(old, line))
    return str(path)


def test_the_network_deactivation_urc_is_the_profiles(emulator, open_modem, tmp_path, echo):
    """pdp.deact_urc is profile data: another family's wording (SIMCom's +PDP: DEACT
    style here), or none when the key is absent (the ML302's profile has none)."""
    host, port = open_modem(_profile_with_deact_urc(tmp_path, "deact_urc = '+PDP: DEACT,{cid}'"))
    assert host.at("AT+QIACT=1") == OK
    _open(host, 1)
    assert emulator.control("register", stat=0)["ok"]
    got = host.read_until(b'+QSSLURC: "closed",1\r\n', timeout=3)
    assert b"\r\n+PDP: DEACT,1\r\n" in got and b"pdpdeact" not in got, got


def test_a_deactivation_urc_template_is_checked(tmp_path):
    from emulator.modem.profile import ProfileError, load_profile
    path = _profile_with_deact_urc(tmp_path, "deact_urc = '+PDP: DEACT,{id}'")
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert "pdp.deact_urc" in str(info.value) and "{cid}" in str(info.value), info.value
