"""Adversarial tests: the start-up, registration and status-polling sequences that widely
used third-party host drivers send to a Quectel EC2x, replayed the way those drivers send
them (same commands, same order, same line ending, same "what counts as success", same
parsing of the answer). 

Drivers replayed (stored copies of their public sources):
- TinyGSM, TINY_GSM_MODEM_BG96 -- the class EC2x users select (TinyGSM has no EC2x class):
  src/TinyGsmClientBG96.h initImpl()/getGSMDateTimeImpl(), src/TinyGsmModem.tpp
  (testAT, getModemName, registration, CSQ), src/TinyGsmGPRS.tpp (IMEI, IMSI, CGATT, COPS),
  src/TinyGsmBattery.tpp (+CBC).  Lines end "\r\n" (AT_NL); waitResponse() returns the index
  of the first of OK / ERROR seen, and initImpl() gives up on anything but OK.
- Zephyr drivers/modem/modem_cellular.c, compatible quectel,eg25-g: the init, dial and
  periodic chat scripts (modem_chat: request + "\r", lines split at "\r", "\n" filtered,
  abort on a line starting "ERROR").  drivers/modem/quectel-bg9x.c setup_cmds (the socket
  offload driver; modem_cmd_handler_setup_cmds() stops at the first command not answered OK).
- vintage_net_mobile (Nerves), VintageNetMobile.Modem.QuectelEC25: lib/vintage_net_mobile/
  modem_info.ex, cell_monitor.ex, signal_monitor.ex, at_parser.ex (+ src/at_lexer.xrl) and the
  pppd chatscript of chatscript.ex.  ExChat frames lines with "\r\n".
- ModemManager: src/mm-port-probe.c (AT probing, vendor/product probing),
  src/mm-broadband-modem.c primary_init_sequence and capabilities,
  src/plugins/quectel/mm-shared-quectel.c time support check (+CTZU=? -> +CTZU=3 -> +CCLK?).
- MuditaOS (the Mudita Pure phone, a Quectel EC25): module-cellular/at/Commands.hpp and
  at/src/Commands.cpp, the modemInit command set (lines end "\r").

Tests marked "Was answered ERROR, now served" pinned commands a real EC2x answers and the
emulator answered ERROR to (emulator/commands/device.py serves them now); each says the
command, the real answer and what the driver did with the ERROR."""
from __future__ import annotations

import re
import time

from emulator.testing.host import Host

FINAL = re.compile(rb"\r\n(OK|ERROR|\+CME ERROR: [^\r\n]*)\r\n")
PROFILE_IMEI, PROFILE_IMSI, PROFILE_ICCID = "867698041234567", "460011234567890", "89860119841234567890"


class Answer:
    def __init__(self, raw: bytes, elapsed: float) -> None:
        self.raw = raw
        self.elapsed = elapsed
        lines = [line.decode("latin-1") for line in raw.split(b"\r\n") if line.strip(b"\r\n")]
        self.final = lines[-1] if lines else ""
        self.lines = lines[:-1]                 # information text and URCs, final result excluded

    @property
    def ok(self) -> bool:
        return self.final == "OK"


class Driver:
    """A host driver's view of the port: its line ending, its reads."""

    def __init__(self, host: Host, eol: bytes) -> None:
        self.host, self.eol = host, eol

    def send(self, command: str, timeout: float = 5) -> Answer:
        start = time.monotonic()
        self.host.write(command.encode("latin-1") + self.eol)
        raw = self.host.read_until(FINAL, timeout=timeout)
        return Answer(raw, time.monotonic() - start)


def tinygsm(host: Host) -> Driver:
    return Driver(host, b"\r\n")


# -- TinyGSM (TINY_GSM_MODEM_BG96) -------------------------------------------------------------
def _tinygsm_clean(answer: Answer) -> str:
    """TinyGsmModem::cleanResponseString(): the text before OK, trimmed."""
    return "\n".join(answer.lines).strip()


def _tinygsm_prefix_then_rest(answer: Answer, prefix: str) -> str | None:
    """waitResponse(GF(prefix)) then stream.readStringUntil('\\n'): what follows the prefix."""
    text = "\r\n".join([""] + answer.lines + [answer.final]) + "\r\n"
    at = text.find(prefix)
    if at < 0:
        return None
    return text[at + len(prefix):].split("\n", 1)[0]


def test_tinygsm_bg96_identity_sim_and_ids(ec2x):
    """The parts of TinyGsmBG96 start-up that work: testAT() (OK within waitResponse(200)),
    E0, +CMEE=2, getModemName() (+CGMI, +CGMM), getSimStatus() (+CPIN?), getIMEI() (+GSN),
    getIMSI() (+CIMI), getSimCCID() (+QCCID, waitResponse(AT_NL "+QCCID:"))."""
    d = tinygsm(ec2x)
    answer = d.send("AT")
    # testAT(): waitResponse(200) == 1, retried every ~300 ms for 10 s (the margin is for a busy CI)
    assert answer.ok and answer.elapsed < 1.0
    assert d.send("ATE0").ok
    assert d.send("AT+CMEE=2").ok
    name = f'{_tinygsm_clean(d.send("AT+CGMI"))} {_tinygsm_clean(d.send("AT+CGMM"))}'
    assert name == "Quectel EC25"
    cpin = d.send("AT+CPIN?")
    assert _tinygsm_prefix_then_rest(cpin, "+CPIN:").strip() == "READY"
    # getIMEIImpl(): skip the first '\n', then the line up to the next '\n'
    gsn = d.send("AT+GSN").raw.decode()
    assert gsn.split("\n", 1)[1].split("\n", 1)[0].strip() == PROFILE_IMEI
    cimi = d.send("AT+CIMI").raw.decode()
    assert cimi.split("\n", 1)[1].split("\n", 1)[0].strip() == PROFILE_IMSI
    ccid = d.send("AT+QCCID")
    assert _tinygsm_prefix_then_rest(ccid, "\r\n+QCCID:").strip() == PROFILE_ICCID


# Was answered ERROR, now served: TinyGsmBG96::initImpl() sends AT+CTZR=0 then AT+CTZU=1 and
# returns false unless both answer OK (a real EC2x: OK, OK; +CTZR/+CTZU are in the EC2x AT
# manual); the emulator answers ERROR to both, so modem.init() fails
def test_tinygsm_bg96_init_returns_true(ec2x):
    d = tinygsm(ec2x)
    assert d.send("AT").ok                                   # testAT()
    assert d.send("ATE0").ok                                 # if (waitResponse() != 1) return false
    d.send("AT+CMEE=2")                                      # result ignored
    d.send("AT+CGMI"), d.send("AT+CGMM")                     # getModemName()
    assert d.send("AT+CTZR=0", timeout=10).ok                # "Disable time and time zone URC's"
    assert d.send("AT+CTZU=1", timeout=10).ok                # "Enable automatic time zone update"
    cpin = d.send("AT+CPIN?")
    assert "READY" in (_tinygsm_prefix_then_rest(cpin, "+CPIN:") or "")


def test_tinygsm_bg96_wait_for_network_and_gprs_connect(ec2x):
    """waitForNetwork() -> isNetworkConnected() (CEREG? first, CREG? as fall-back),
    getSignalQuality(), getOperator(), gprsConnect() (QIDEACT, QICSGP, QIACT, CGATT),
    isGprsConnected() (+CGATT?) and getLocalIP() (+CGPADDR=1)."""
    d = tinygsm(ec2x)

    def xreg(cmd: str) -> int:                                # getRegistrationStatusXREG()
        answer = d.send(f"AT+{cmd}?")
        rest = _tinygsm_prefix_then_rest(answer, f"+{cmd}:")
        assert rest is not None, answer.raw
        return int(re.match(r"\s*\d+,(\d+)", rest).group(1))  # streamSkipUntil(','); parseInt()

    assert xreg("CEREG") in (1, 5)
    csq = _tinygsm_prefix_then_rest(d.send("AT+CSQ"), "+CSQ:")
    assert 0 < int(csq.split(",")[0]) < 32                   # streamGetIntBefore(',')
    cops = _tinygsm_prefix_then_rest(d.send("AT+COPS?"), "+COPS:")
    assert cops.split('"')[1] == "CHN-UNICOM"                # skip until '"', read until '"'

    d.send("AT+QIDEACT=1", timeout=40)                       # gprsDisconnect(); result ignored
    assert d.send('AT+QICSGP=1,1,"UNINET","",""').ok
    assert d.send("AT+QIACT=1", timeout=150).ok
    assert d.send("AT+CGATT=1", timeout=60).ok
    cgatt = _tinygsm_prefix_then_rest(d.send("AT+CGATT?"), "+CGATT:")
    assert int(cgatt.strip()) == 1                           # isGprsConnected()
    cgpaddr = _tinygsm_prefix_then_rest(d.send("AT+CGPADDR=1"), "+CGPADDR:")
    ip = cgpaddr.split(",", 1)[1].split("\r", 1)[0]          # skip the cid; readStringUntil('\r')
    assert ip.strip('"') == "10.7.157.1"


# Was answered ERROR, now served: TinyGsmBG96 getNetworkTime()/getGSMDateTime() send AT+QLTS=2
# and wait 2 s for +QLTS: "; a real EC2x answers +QLTS: "2026/09/11,22:22:28+32,0" then OK; the
# emulator answers ERROR
def test_tinygsm_bg96_get_network_time(ec2x):
    d = tinygsm(ec2x)
    answer = d.send("AT+QLTS=2", timeout=2)
    rest = _tinygsm_prefix_then_rest(answer, '+QLTS: "')
    assert rest is not None, answer.raw
    # streamGetIntBefore('/') x2, (','), (':') x2, streamGetIntLength(2), sign, (','), DST
    m = re.match(r'(\d+)/(\d+)/(\d+),(\d+):(\d+):(\d{2})([+-])(\d+),(\d)"', rest)
    assert m, rest
    year, tz = int(m.group(1)), int(m.group(8))
    assert year >= 2000 and 0 <= tz <= 96


# Was answered ERROR, now served: TinyGsmBattery getBattVoltage()/getBattPercent() send AT+CBC
# and parse +CBC: <bcs>,<bcl>,<voltage mV>; a real EC2x answers e.g. +CBC: 0,80,3940 then OK;
# the emulator answers ERROR
def test_tinygsm_battery_voltage(ec2x):
    d = tinygsm(ec2x)
    rest = _tinygsm_prefix_then_rest(d.send("AT+CBC"), "+CBC:")
    assert rest is not None
    bcs, bcl, voltage = (int(v) for v in rest.strip().split(","))
    assert bcs in (0, 1, 2) and 0 <= bcl <= 100 and 3000 <= voltage <= 4500


# -- Zephyr --------------------------------------------------------------------------------------
class ZephyrChat:
    """modem_chat as modem_cellular configures it: a script request is sent with the "\\r"
    delimiter; received lines split at "\\r" with "\\n" filtered; empty lines dropped; a line
    starting "ERROR" aborts the script."""

    def __init__(self, host: Host) -> None:
        self.driver = Driver(host, b"\r")
        self.unsolicited: list[str] = []

    def request(self, command: str) -> list[str]:
        answer = self.driver.send(command, timeout=10)
        assert not answer.final.startswith("ERROR"), f"script aborted at {command!r}: {answer.raw!r}"
        assert answer.final == "OK", (command, answer.raw)
        return answer.lines

    def collect_urcs(self, seconds: float) -> list[str]:
        raw = self.driver.host.quiet_for(seconds)
        lines = [line for line in raw.replace(b"\n", b"").decode().split("\r") if line]
        self.unsolicited += lines
        return lines


def _zephyr_cxreg(line: str, regs: dict) -> None:
    """modem_cellular_chat_on_cxreg(): argv split at ','; "+CxREG: <n>,<stat>..." (read)
    when argv[2] is not quoted, else "+CxREG: <stat>..." (URC)."""
    name, _, rest = line.partition(": ")
    argv = [name + ": "] + rest.split(",")
    if len(argv) >= 3 and not argv[2].startswith('"'):
        stat = int(argv[2])
    elif len(argv) >= 2:
        stat = int(argv[1])
    else:
        return
    regs[name] = stat


def test_zephyr_modem_cellular_eg25g_init_dial_and_periodic_scripts(ec2x):
    """quectel_eg25_g_init_chat_script (up to AT+CMUX, which the emulator does not do),
    the dial script up to ATD*99***1# (PPP is not emulated) and the periodic script."""
    chat = ZephyrChat(ec2x)
    regs: dict[str, int] = {}
    for command in ("ATE0", "AT+CFUN=4", "AT+CMEE=1", "AT+CREG=1", "AT+CGREG=1", "AT+CEREG=1"):
        assert chat.request(command) == []
    for command in ("AT+CREG?", "AT+CEREG?", "AT+CGREG?"):
        lines = chat.request(command)
        assert len(lines) == 1 and re.fullmatch(r"\+C(E|G)?REG: 1,\d", lines[0]), lines
        _zephyr_cxreg(lines[0], regs)
    assert set(regs.values()) == {0}                          # radio off (CFUN=4): not registered
    info = {}
    for command, key in (("AT+CGSN", "imei"), ("AT+CGMM", "model"), ("AT+CGMI", "manufacturer"),
                         ("AT+CGMR", "fw"), ("AT+CIMI", "imsi")):
        lines = chat.request(command)                         # MODEM_CHAT_MATCH("", "", ...): argc 2
        assert len(lines) == 1, (command, lines)
        info[key] = lines[0]
    assert info == {"imei": PROFILE_IMEI, "model": "EC25", "manufacturer": "Quectel",
                    "fw": "EC25EFAR06A06M4G", "imsi": PROFILE_IMSI}

    # dial script: "AT+CGACT=0,1" allows OK or ERROR, then the APN and the radio on.
    answer = chat.driver.send("AT+CGACT=0,1")
    assert answer.final in ("OK", "ERROR")
    assert chat.request('AT+CGDCONT=1,"IP","internet"') == []
    assert chat.request("AT+CFUN=1") == []
    # modem_cellular waits for MODEM_CELLULAR_EVENT_REGISTERED, raised by the +CxREG: URCs
    # (as long as the event takes, up to 10 s: a loaded machine may write them late)
    urcs: list[str] = []
    deadline = time.monotonic() + 10
    settle = 0.0
    while settle < 0.3:                                      # then 0.3 s more for the rest
        for line in chat.collect_urcs(0.1):
            urcs.append(line)
            if re.match(r"\+C(E|G)?REG: ", line):
                _zephyr_cxreg(line, regs)
        if regs.get("+CEREG") in (1, 5) or regs.get("+CREG") in (1, 5) or time.monotonic() > deadline:
            settle += 0.1
    assert regs.get("+CEREG") in (1, 5) or regs.get("+CREG") in (1, 5), urcs

    # periodic script: CREG?, CEREG?, CGREG?, CSQ (csq_match "+CSQ: " with ',' separators)
    for command in ("AT+CREG?", "AT+CEREG?", "AT+CGREG?"):
        lines = chat.request(command)
        _zephyr_cxreg(lines[0], regs)
    assert set(regs.values()) == {1}
    lines = chat.request("AT+CSQ")
    argv = ["+CSQ: "] + lines[0].split(": ", 1)[1].split(",")
    assert len(argv) == 3 and 0 < int(argv[1]) < 32


# Was answered ERROR, now served: Zephyr quectel-bg9x setup_cmds send ATE0, ATH, AT+CMEE=1, ...
# and modem_cmd_handler_setup_cmds() stops at the first command not answered OK; a real EC2x
# answers ATH with OK (no call to hang up), the emulator answers ERROR, so the driver never
# reaches AT+CGMI/QICSGP/QIACT
def test_zephyr_quectel_bg9x_setup_cmds(ec2x):
    d = Driver(ec2x, b"\r\n")
    setup = ["ATE0", "ATH", "AT+CMEE=1", "AT+CGMI", "AT+CGMM", "AT+CGMR", "AT+CGSN", "AT+CIMI",
             "AT+QCCID", 'AT+QICSGP=1,1,"internet","", "",1']
    for command in setup:
        answer = d.send(command)
        assert answer.ok, (command, answer.raw)
    rssi = int(re.search(r"\+CSQ: (\d+),", "\n".join(d.send("AT+CSQ").lines)).group(1))
    assert -114 + rssi * 2 + 1 > -1000 and rssi != 99      # on_cmd_atcmdinfo_rssi_csq()
    assert d.send("AT+QIACT=1").ok                           # modem_pdp_context_activate()


# -- vintage_net_mobile (Nerves), QuectelEC25 --------------------------------------------------
def _at_lexer(line: str):
    """VintageNetMobile.ATParser.parse/1 (src/at_lexer.xrl): {header, args}; quoted strings
    become strings, digits integers; anything else is a parse error."""
    m = re.match(r"(\+[A-Z]+: )(.*)$", line)
    if not m:
        raise ValueError(f"Expecting string to start with '+XYZ: ', but got {line!r}")
    args = []
    for token in re.findall(r'"[^"]*"|[^,]+', m.group(2)):
        if token.startswith('"'):
            args.append(token[1:-1])
        elif re.fullmatch(r"-?\d+", token):
            args.append(int(token))
        else:
            raise ValueError(f"parse error at {token!r} in {line!r}")
    return m.group(1), args


class ExChat:
    """ExChat.send/3: "\\r\\n" framing; "+..." lines go to the registered notification
    handlers, other lines are the response; OK / ERROR end it."""

    def __init__(self, host: Host) -> None:
        self.driver = Driver(host, b"\r\n")
        self.notifications: list[str] = []

    def send(self, command: str, timeout: float = 1.0):
        answer = self.driver.send(command, timeout=timeout)
        self.notifications += [line for line in answer.lines if line.startswith("+")]
        if not answer.ok:
            return ("error", answer.final)
        return ("ok", [line for line in answer.lines if not line.startswith("+") and line != command])

    def notification(self, header: str) -> str:
        found = [line for line in self.notifications if line.startswith(header)]
        assert found, (header, self.notifications)
        return found[-1]


def test_vintage_net_mobile_modem_info_signal_and_creg(ec2x):
    """ModemInfo (ATE0, AT+CIMI, AT+QCCID), SignalMonitor (AT+CSQ) and CellMonitor's
    AT+CREG=2 / AT+CREG? ("+CREG: 2,<stat>,<lac>,<ci>,<act>" expected)."""
    chat = ExChat(ec2x)
    chat.send("ATE0", timeout=0.5)
    assert chat.send("AT+CIMI", timeout=0.5) == ("ok", [PROFILE_IMSI])  # cimi_response_to_imsi
    chat.send("AT+QCCID", timeout=0.5)
    line = chat.notification("+QCCID")                       # ExChat.register(tty, "+QCCID", ...)
    assert line.startswith("+QCCID: ") and line[len("+QCCID: "):] == PROFILE_ICCID  # parse("+QCCID: " <> id)
    chat.send("AT+CSQ", timeout=0.5)
    _, (rssi, ber) = _at_lexer(chat.notification("+CSQ:"))
    assert 0 < rssi < 32 and ber == 99
    assert chat.send("AT+CREG=2")[0] == "ok"                # {:ok, _} = ExChat.send(...)
    chat.send("AT+CREG?")
    header, args = _at_lexer(chat.notification("+CREG:"))
    n, stat, lac, ci, act = args                             # creg_response_to_registration
    assert (n, stat, act) == (2, 1, 7)
    assert int(lac, 16) > 0 and int(ci, 16) > 0              # safe_hex_to_int


def _cops_numeric_and_long(chat: ExChat) -> tuple[str, str]:
    chat.send("AT+COPS=3,2")
    numeric = _at_lexer([l for l in chat.driver.send("AT+COPS?").lines if l.startswith("+COPS:")][0])[1][2]
    chat.send("AT+COPS=3,0")
    long_name = _at_lexer([l for l in chat.driver.send("AT+COPS?").lines if l.startswith("+COPS:")][0])[1][2]
    return numeric, long_name


# Was answered ERROR, now served: CellMonitor polls AT+QNWINFO and needs +QNWINFO:
# <act>,<oper>,<band>,<channel> (a real EC2x: +QNWINFO: "FDD LTE","46001","LTE BAND 3",1650);
# the emulator answers ERROR, so it logs "Unexpected AT+QNWINFO response" every 30 s
def test_vintage_net_mobile_cell_monitor_qnwinfo(ec2x):
    chat = ExChat(ec2x)
    numeric, _ = _cops_numeric_and_long(chat)
    chat.send("AT+QNWINFO")
    _, args = _at_lexer(chat.notification("+QNWINFO:"))
    act, oper, band, channel = args                          # qnwinfo_response_to_info
    assert act in ("FDD LTE", "TDD LTE") and oper == numeric
    assert band.startswith("LTE BAND ") and isinstance(channel, int)


# Was answered ERROR, now served: CellMonitor polls AT+QSPN and needs +QSPN:
# <FNN>,<SNN>,<SPN>,<alphabet>,<RPLMN> (a real EC2x: +QSPN: "CHN-UNICOM","UNICOM","",0,"46001");
# the emulator answers ERROR, so the network name and MCC/MNC stay unknown
def test_vintage_net_mobile_cell_monitor_qspn(ec2x):
    chat = ExChat(ec2x)
    numeric, long_name = _cops_numeric_and_long(chat)
    chat.send("AT+QSPN")
    _, args = _at_lexer(chat.notification("+QSPN:"))
    fnn, snn, spn, alphabet, plmn = args                     # qspn_response_to_network
    assert fnn == long_name and plmn == numeric and alphabet in (0, 1)


# Was answered ERROR, now served: The EC25 pppd chatscript is "" AT / OK ATH / OK ATZ / OK ATQ0
# / OK AT+CGDCONT=...; a real EC2x answers ATH with OK, the emulator answers ERROR (chat aborts
# before it ever dials)
def test_vintage_net_mobile_pppd_chatscript_before_dial(ec2x):
    d = Driver(ec2x, b"\r")                                  # chat(8) sends "\r" after each string
    for command in ("AT", "ATH", "ATZ", "ATQ0", 'AT+CGDCONT=1,"IP","internet"'):
        answer = d.send(command)
        assert answer.ok, (command, answer.raw)              # expect-string "OK"


# -- ModemManager ---------------------------------------------------------------------------------
def test_modemmanager_probing_and_identity(ec2x):
    """mm-port-probe.c: "AT" until it answers, then vendor (+CGMI) and product (+CGMM);
    mm-broadband-modem.c identity loaders (+CGMR, +CGSN) and device id (ATI)."""
    d = Driver(ec2x, b"\r")
    assert d.send("AT", timeout=3).ok
    assert d.send("AT+CGMI", timeout=3).lines == ["Quectel"]
    assert d.send("AT+CGMM", timeout=3).lines == ["EC25"]
    assert d.send("AT+CGMR", timeout=3).lines == ["EC25EFAR06A06M4G"]
    assert d.send("AT+CGSN", timeout=3).lines == [PROFILE_IMEI]
    ati = d.send("ATI", timeout=3).lines                     # mm-shared-quectel: 2nd line is the name
    assert ati[:2] == ["Quectel", "EC25"] and ati[2].startswith("Revision: ")


# Was answered ERROR, now served: ModemManager's primary_init_sequence is E0, V1, +CMEE=1, X4,
# &C1; ATX is in the EC2x AT manual (<value> 0-4, default 4) and a real EC2x answers OK; the
# emulator answers ATX4 with ERROR
def test_modemmanager_primary_init_sequence(ec2x):
    d = Driver(ec2x, b"\r")
    for command in ("ATE0", "ATV1", "AT+CMEE=1", "ATX4", "AT&C1"):
        answer = d.send(command, timeout=3)
        assert answer.ok, (command, answer.raw)


# Was answered ERROR, now served: ModemManager's Quectel plugin checks time support with
# AT+CTZU=? (an EC25 answers +CTZU: (0,1,3), and the plugin then sends AT+CTZU=3 so that +CCLK?
# is local time); the emulator answers ERROR and the plugin falls back to a +CCLK? that reads
# UTC on a real EC25
def test_modemmanager_quectel_time_support(ec2x):
    d = Driver(ec2x, b"\r")
    answer = d.send("AT+CTZU=?", timeout=3)
    lines = [line for line in answer.lines if line.startswith("+CTZU:")]
    assert answer.ok and lines, answer.raw
    modes = {int(v) for v in re.findall(r"\d+", lines[0].split(":", 1)[1])}  # mm_split_string_groups
    assert {0, 1, 3} <= modes
    assert d.send("AT+CTZU=3", timeout=3).ok
    assert re.fullmatch(r'\+CCLK: "\d\d/\d\d/\d\d,\d\d:\d\d:\d\d[+-]\d\d"', d.send("AT+CCLK?").lines[0])


# Was answered ERROR, now served: ModemManager loads capabilities with AT+GCAP first and parses
# "+CGSM" from it (parse_caps_gcap); Qualcomm-platform modems such as the EC2x answer +GCAP:
# +CGSM (V.250 6.1.9; the exact EC25 list is unverified); the emulator answers ERROR (MM then
# falls back to ATI and +CPIN?)
def test_modemmanager_gcap_capabilities(ec2x):
    d = Driver(ec2x, b"\r")
    answer = d.send("AT+GCAP", timeout=2)
    assert answer.ok and any(line.startswith("+GCAP:") and "+CGSM" in line for line in answer.lines)


# Was answered ERROR, now served: ModemManager loads charsets with AT+CSCS=? and selects one
# with AT+CSCS="UCS2" (or "IRA"/"GSM"); a real EC2x answers +CSCS: ("GSM","IRA","UCS2") and OK
# to each; the emulator answers ERROR to all of them
def test_modemmanager_charset_setup(ec2x):
    d = Driver(ec2x, b"\r")
    answer = d.send("AT+CSCS=?", timeout=3)
    assert answer.ok and any('"GSM"' in line and '"UCS2"' in line for line in answer.lines), answer.raw
    assert d.send('AT+CSCS="UCS2"', timeout=3).ok
    assert d.send("AT+CSCS?", timeout=3).lines == ['+CSCS: "UCS2"']
    assert d.send('AT+CSCS="GSM"', timeout=3).ok


# -- MuditaOS (Mudita Pure, EC25) --------------------------------------------------------------------
# Was answered ERROR, now served: MuditaOS modemInit sends AT+QCFG="cmux/urcport",1,
# AT+QCFG="urc/ri/ring","off", AT+QCFG="urc/ri/smsincoming","off", AT+QURCCFG="urcport","uart1",
# AT+QCFG="apready",1,1,200, AT+QINDCFG="csq",1 (all OK on a real EC25); the emulator answers
# ERROR to every one
def test_muditaos_modem_init_set(ec2x):
    d = Driver(ec2x, b"\r")
    for command in ('AT+QCFG="cmux/urcport",1', 'AT+QCFG="urc/ri/ring","off"',
                    'AT+QCFG="urc/ri/smsincoming","off"', 'AT+QURCCFG="urcport","uart1"',
                    'AT+QCFG="apready",1,1,200', 'AT+QINDCFG="csq",1'):
        answer = d.send(command, timeout=5)
        assert answer.ok, (command, answer.raw)
