"""Commands third-party drivers send on start-up and while polling that have nothing to do with
sockets, so that a driver's init sequence gets the answers a real module gives instead of
ERROR: ATH, ATX, AT+CSCS, AT+CTZU / AT+CTZR, AT+QLTS, AT+CPAS, AT+GCAP, AT+QGMR, AT+CBC,
AT+QSCLK, the SMS set-up AT+CMGF / AT+CSCA / AT+CNMI (no messages), the status polls AT+QNWINFO / AT+QSPN / AT+QCSQ, and the item-configuration
commands AT+QCFG / AT+QURCCFG / AT+QINDCFG, whose items are profile data ([qcfg] & co.).

Which of them a module has is its profile's [commands]; the values they report are its
profile's (network.*, identity.*, device.*).  What they change is kept (docs/behaviour.md,
"Device configuration commands") but drives nothing: the emulator has one port, no ring
indicator, no battery and no sleep."""
from __future__ import annotations

import json
import math
import re
from datetime import timedelta

from emulator.at.args import Args
from emulator.at.parser import EXEC, READ, WRITE
from emulator.at.registry import command
from emulator.at.responses import Cme, CommandError, ok
from emulator.commands.general import sim_not_ready
from emulator.logsafe import get_logger
from emulator.modem.registration import registration
from emulator.storage.atomic_file import atomic_write, read_plain

log = get_logger("emulator.device")

# AT+CTZU <onoff>: 0 off, 1 on, 3 on with local time in the RTC (ModemManager's Quectel
# plugin asks AT+CTZU=? and sends 3 when it is listed, as an EC25 lists it).
CTZU_VALUES = (0, 1, 3)
CHARSETS = ("GSM", "IRA", "UCS2")


class DeviceConfig:
    """What these commands set.  The module keeps AT+CTZU, AT+QSCLK and the AT+QCFG /
    AT+QURCCFG / AT+QINDCFG items in its NV: here <state_dir>/nv.json, written at once
    (atomically) and read back, checked value by value, when the modem starts; AT+CTZR
    and AT+CSCS start again from their defaults at a restart."""

    # The NV numbers and the values each may take (the items and AT+QSIMDET besides).
    NV = {"ctzu": CTZU_VALUES, "qsclk": (0, 1), "qsimstat": (0, 1)}
    SAVED_KEYS = (*NV, "qsimdet", "items")            # what nv.json holds, in its order

    def __init__(self, modem) -> None:
        self.modem = modem
        self.ctzu = 1
        self.qsclk = 0
        self.qsimstat = 0                 # AT+QSIMSTAT <enable>: the insertion URC off
        self.qsimdet = [0, 0]             # AT+QSIMDET <enable>,<insert_level>
        self.items: dict[str, dict[str, list[str]]] = {}     # "qcfg" -> item -> wire tokens
        self._path = modem.state_dir / "nv.json" if modem.state_dir is not None else None
        self._load()
        self._volatile()
        modem.on("reset", self._volatile)

    def _volatile(self) -> None:
        self.ctzr = 0
        self.cscs = "GSM"
        self.cmgf = 0                     # SMS format: 0 PDU, 1 text
        self.csca: tuple[str, int] | None = None    # AT+CSCA set: (<sca>, <tosca>)
        self.cnmi = list(CNMI_DEFAULT)

    def item_values(self, table: str, item: str) -> list[str]:
        values = self.items.setdefault(table, {})
        if item not in values:
            values[item] = list(self.modem.profile[table][item]["value"])
        return values[item]

    def save(self) -> None:
        """After a change of an NV value.  A state dir that cannot be written loses it at
        the next start only: the command's change holds (logged)."""
        if self._path is None:
            return
        data = self.saved_form()
        try:
            atomic_write(self._path, json.dumps(data).encode())
        except OSError as exc:
            log.warning("%s: NV settings not saved: %s", self._path, exc.strerror or exc)

    def saved_form(self) -> dict:
        """What nv.json holds for these values (JSON values)."""
        return {key: getattr(self, key) for key in self.SAVED_KEYS}

    def _load(self) -> None:
        """nv.json as saved, value by value: one a hand edit or another profile made
        impossible (no such item, a value its test form refuses) keeps its default, with a
        warning naming it; the emulator never stops on it."""
        if self._path is None or not self._path.exists():
            return
        try:
            data = json.loads(read_plain(self._path))
            assert isinstance(data, dict)
        except Exception:                 # unreadable, not JSON, nested too deep, not a dict
            log.warning("%s: not readable NV settings, ignored", self._path)
            return
        def number(value, allowed) -> bool:         # (true and 1.0 are == 1: not numbers here)
            return type(value) is int and value in allowed
        for key, allowed in self.NV.items():
            if key not in data:
                continue
            if number(data[key], allowed):
                setattr(self, key, data[key])
            else:
                log.warning("%s: NV value %s %r is not one of %s: its default is kept",
                            self._path, key, data[key], allowed)
        det = data.get("qsimdet")
        if isinstance(det, list) and len(det) == 2 and all(number(v, (0, 1)) for v in det):
            self.qsimdet = list(det)
        elif det is not None:
            log.warning("%s: NV value qsimdet %r is not two of 0/1: its default is kept", self._path, det)
        items = data.get("items")
        for table, saved in (items.items() if isinstance(items, dict) else ()):
            for item, tokens in (saved.items() if isinstance(saved, dict) else ()):
                spec = (self.modem.profile.get(table) or {}).get(item) if table in ITEM_TABLES.values() else None
                if (spec is None or not isinstance(tokens, list) or len(tokens) != len(spec["value"])
                        or not all(isinstance(t, str) for t in tokens)
                        or not_as_shown(tokens, form_groups(spec["test"])) is not None):
                    log.warning("%s: NV item %s %r (%r) does not fit this profile: its default is kept",
                                self._path, table, item, tokens)
                    continue
                self.items.setdefault(table, {})[item] = list(tokens)


def device(modem) -> DeviceConfig:
    return modem.feature("device", DeviceConfig)


# -- V.250 basics -------------------------------------------------------------------------
@command("H", EXEC)
def hang_up(modem, cmd):
    """ATH[0]: there is no call to hang up (a socket is closed with its own command), so OK."""
    Args(cmd).int(0, 0, 0, default=0)
    return ok()


@command("X", EXEC)
def result_codes(modem, cmd):
    """ATX<0-4>: which CONNECT / BUSY / NO DIALTONE codes a dial reports: kept (AT&V shows
    it, AT&W saves it), no other effect (nothing here dials)."""
    modem.settings.x = Args(cmd).int(0, 0, 4, default=0)
    return ok()


# -- character set, time zone, clock ---------------------------------------------------------
@command("+CSCS", WRITE, test="+CSCS: " + "(" + ",".join(f'"{c}"' for c in CHARSETS) + ")")
def cscs_write(modem, cmd):
    args = Args(cmd, error=Cme(50), at_most=1)
    chset = args.str(0, quoted=True, max_len=16).upper()
    if chset not in CHARSETS:
        raise CommandError(Cme(50), f"AT+CSCS: {chset!r} is not one of {', '.join(CHARSETS)}")
    device(modem).cscs = chset
    return ok()


@command("+CSCS", READ)
def cscs_read(modem, cmd):
    return ok(f'+CSCS: "{device(modem).cscs}"')


def _kept(name: str, attr: str, values: tuple[int, ...], test: str, error=Cme(50)) -> None:
    """AT<name>=<n> keeps one of `values` (DeviceConfig.<attr>); AT<name>? shows it."""
    def write(modem, cmd):
        value = Args(cmd, error=error, at_most=1).int(0, 0, max(values))
        if value not in values:
            raise CommandError(error, f"AT{name}={value}: only {test}")
        config = device(modem)
        setattr(config, attr, value)
        if attr in config.NV:
            config.save()
        return ok()

    def read(modem, cmd):
        return ok(f"{name}: {getattr(device(modem), attr)}")

    command(name, WRITE, test=f"{name}: {test}")(write)
    command(name, READ)(read)


_kept("+CTZU", "ctzu", CTZU_VALUES, "(" + ",".join(map(str, CTZU_VALUES)) + ")")
_kept("+CTZR", "ctzr", (0, 1, 2), "(0-2)")
_kept("+QSCLK", "qsclk", (0, 1), "(0,1)", error="ERROR")     # (no +CME code documented)


# -- SMS set-up (EC25/EC21 AT Commands Manual, SMS chapter; 3GPP TS 27.005) ------------------
# Driver start-ups set the message format, read the service centre and choose how new-message
# indications come (Zerynth's BG96 init stops at the first ERROR).  No message is ever sent or
# received: the settings are kept (until a restart) and read back, nothing else.
CNMI_RANGES = ((0, 2), (0, 3), (0, 2), (0, 2), (0, 1))     # <mode>,<mt>,<bm>,<ds>,<bfr>
CNMI_BM = (0, 2)
CNMI_DEFAULT = (2, 1, 0, 0, 0)


@command("+CMGF", WRITE, test="+CMGF: (0,1)")
def cmgf_write(modem, cmd):
    device(modem).cmgf = Args(cmd, at_most=1).int(0, 0, 1)
    return ok()


@command("+CMGF", EXEC)
def cmgf_exec(modem, cmd):
    device(modem).cmgf = 0                # (27.005: the parameter omitted is its default, PDU)
    return ok()


@command("+CMGF", READ)
def cmgf_read(modem, cmd):
    return ok(f"+CMGF: {device(modem).cmgf}")


@command("+CSCA", WRITE)           # (AT+CSCA=? is OK alone, as 27.005 has it)
def csca_write(modem, cmd):
    args = Args(cmd, at_most=2)
    sca = args.str(0, quoted=True, max_len=21)
    if not re.fullmatch(r"\+?[0-9*#]{1,20}", sca):
        raise CommandError("ERROR", f"AT+CSCA: {sca!r} is not a phone number")
    tosca = args.int(1, 0, 255, default=145 if sca.startswith("+") else 129)
    device(modem).csca = (sca, tosca)
    return ok()


@command("+CSCA", READ)
def csca_read(modem, cmd):
    sca = modem.profile["network.sms_center"]
    sca, tosca = device(modem).csca or (sca, 145 if sca.startswith("+") else 129)
    return ok(f'+CSCA: "{sca}",{tosca}')


@command("+CNMI", WRITE, test="+CNMI: (0-2),(0-3),(0,2),(0-2),(0,1)")
def cnmi_write(modem, cmd):
    args = Args(cmd, at_most=5)
    config = device(modem)
    values = [args.int(i, low, high, default=config.cnmi[i]) for i, (low, high) in enumerate(CNMI_RANGES)]
    if values[2] not in CNMI_BM:
        raise CommandError("ERROR", f"AT+CNMI: <bm> {values[2]} is not one of 0, 2")
    config.cnmi = values
    return ok()


@command("+CNMI", READ)
def cnmi_read(modem, cmd):
    return ok("+CNMI: " + ",".join(map(str, device(modem).cnmi)))


# -- (U)SIM status (EC25/EC21 AT Commands Manual, (U)SIM chapter) -----------------------------
# Kura's Quectel support asks AT+QSIMSTAT? for the insertion status; MuditaOS checks that
# AT+QSIMDET / AT+QSIMSTAT are enabled at boot, sets them and AT&W's otherwise.  Both are
# "saved automatically" (NV here).  The SIM is always in: <inserted_status> 1 once the SIM has
# started (+CPIN: READY), 2 "unknown" before.  No hot-swap: the URC the switch enables never
# comes, and <insert_level> is only kept.
@command("+QSIMSTAT", WRITE, test="+QSIMSTAT: (0,1)")
def qsimstat_write(modem, cmd):
    config = device(modem)
    config.qsimstat = Args(cmd, error=Cme(50), at_most=1).int(0, 0, 1)
    config.save()
    return ok()


@command("+QSIMSTAT", READ)
def qsimstat_read(modem, cmd):
    # (a SIM AT+CFUN=0 switched off is still in: 1; starting after a restart: 2)
    return ok(f"+QSIMSTAT: {device(modem).qsimstat},{1 if modem.sim_ready or modem.sim_off else 2}")


@command("+QSIMDET", WRITE, test="+QSIMDET: (0,1),(0,1)")
def qsimdet_write(modem, cmd):
    args = Args(cmd, error=Cme(50), at_most=2)
    config = device(modem)
    config.qsimdet = [args.int(0, 0, 1), args.int(1, 0, 1)]
    config.save()
    return ok()


@command("+QSIMDET", READ)
def qsimdet_read(modem, cmd):
    enable, level = device(modem).qsimdet
    return ok(f"+QSIMDET: {enable},{level}")


@command("+QINISTAT", EXEC, test="+QINISTAT: (0-7)")
def qinistat(modem, cmd):
    """The SIM's initialization: 1 CPIN READY + 2 SMS DONE + 4 PB DONE.  Here 0 until the
    boot's +CPIN: READY, then each bit from its boot URC on (EC2x: 1, 3 after +QIND: SMS DONE,
    7 after +QIND: PB DONE), all once the boot is over (a profile without those URCs: 7;
    scripts wait for 7)."""
    if not modem.sim_ready:
        return ok("+QINISTAT: 0")
    done, said = modem.booted, modem.boot_said
    status = 1 | (2 if done or "+QIND: SMS DONE" in said else 0) | (4 if done or "+QIND: PB DONE" in said else 0)
    return ok(f"+QINISTAT: {status}")


# AT+QPINC: the PIN/PUK attempts left; no PIN is ever entered wrong here, so all are left.
PINC = {"SC": (3, 10), "P2": (3, 10)}


@command("+QPINC", WRITE, test='+QPINC: ("SC","P2")')
def qpinc_write(modem, cmd):
    facility = Args(cmd, error=Cme(50), at_most=1).str(0, quoted=True, max_len=4).upper()
    if facility not in PINC:
        raise CommandError(Cme(50), f"AT+QPINC: {facility!r} is not SC or P2")
    sim_not_ready(modem)
    pin, puk = PINC[facility]
    return ok(f'+QPINC: "{facility}",{pin},{puk}')


@command("+QPINC", READ)
def qpinc_read(modem, cmd):
    sim_not_ready(modem)
    return ok(*[f'+QPINC: "{name}",{pin},{puk}' for name, (pin, puk) in PINC.items()])


@command("+QLTS", EXEC, WRITE, test="+QLTS: (0-2)")
def qlts(modem, cmd):
    """The time the network gave: <mode> 0 (the last synchronisation) and 1 (GMT now), 2
    (local now), as "yyyy/MM/dd,hh:mm:ss+zz,<dst>".  The network's time is the modem
    clock's (AT+CCLK): 0 and 1 both answer GMT now.  No network, no time: ""."""
    mode = Args(cmd, error=Cme(50), at_most=1).int(0, 0, 2, default=0)
    if not registration(modem).registered():
        return ok('+QLTS: ""')
    clock = modem.clock
    shown = clock.now() + timedelta(minutes=15 * clock.quarters if mode == 2 else 0)
    sign = "+" if clock.quarters >= 0 else "-"
    return ok(f'+QLTS: "{shown.strftime("%Y/%m/%d,%H:%M:%S")}{sign}{abs(clock.quarters):02d},0"')


# -- identity and status -------------------------------------------------------------------
@command("+GCAP", EXEC)
def gcap(modem, cmd):
    return ok(f"+GCAP: {modem.profile['identity.gcap']}")


@command("+QGMR", EXEC)
def qgmr(modem, cmd):
    return ok(modem.profile.get("identity.firmware") or modem.profile["identity.revision"])


@command("+CPAS", EXEC, test="+CPAS: (0,3,4)")
def cpas(modem, cmd):
    return ok("+CPAS: 0")                  # ready: no call is ever ringing or in progress


@command("+CBC", EXEC)
def cbc(modem, cmd):
    bcs, bcl, millivolts = modem.profile["device.battery"]
    return ok(f"+CBC: {bcs},{bcl},{millivolts}")


@command("+QNWINFO", EXEC)
def qnwinfo(modem, cmd):
    reg = registration(modem)
    if not reg.registered():
        return ok("+QNWINFO: No Service")
    p = modem.profile
    return ok(f'+QNWINFO: "{p["network.rat"]}","{reg.operator(2)}","{p["network.band"]}",{p["network.channel"]}')


@command("+QSPN", EXEC)
def qspn(modem, cmd):
    """<FNN>,<SNN>,<SPN>,<alphabet>,<RPLMN>: the network's long and short names (AT+COPS
    formats 0 and 1), no SIM service provider name."""
    reg = registration(modem)
    if not reg.registered():
        raise CommandError(Cme(30), "AT+QSPN: not registered")
    return ok(f'+QSPN: "{reg.operator(0)}","{reg.operator(1)}","",0,"{reg.operator(2)}"')


def rssi_dbm(modem) -> int:
    """The received signal strength in dBm that the profile's AT+CSQ <rssi> stands for."""
    csq = modem.profile["network.csq"][0]
    return -113 + 2 * min(csq, 31) if csq != 99 else -113


def qcsq_sinr(sinr_db: float) -> int:
    """SINR as AT+QCSQ shows it: 1/5 dB steps from -20 dB (0-250 for -20..+30 dB)."""
    return math.floor((sinr_db + 20) * 5 + 0.5)


@command("+QCSQ", EXEC)
def qcsq(modem, cmd):
    """The profile's network.qcsq line (EC2x '"LTE",{rssi},{rsrp},{sinr},{rsrq}': its system
    mode is the module's), {rssi} in dBm from the profile's AT+CSQ, {rsrp} {rsrq} {sinr} the
    serving cell's ([cell], which AT+QENG="servingcell" shows too)."""
    if not registration(modem).registered():
        return ok('+QCSQ: "NOSERVICE"')
    cell = modem.profile.get("cell") or {}
    fields = {"rssi": rssi_dbm(modem), "rsrp": cell.get("rsrp"), "rsrq": cell.get("rsrq"),
              "sinr": qcsq_sinr(cell["sinr"]) if "sinr" in cell else None}
    return ok("+QCSQ: " + modem.profile["network.qcsq"].format(**fields))


# -- AT+QCFG / AT+QURCCFG / AT+QINDCFG: items as profile data -------------------------------
ITEM_TABLES = {"+QCFG": "qcfg", "+QURCCFG": "qurccfg", "+QINDCFG": "qindcfg", "+QGPSCFG": "qgpscfg"}
ITEM_NAME_MAX = 64                    # what the commands read as <item> (Args.str max_len)
NUMBER_MAX = 12                       # digits of a number in a test form or a value
_NUMBER = re.compile(r"[0-9]{1,%d}" % NUMBER_MAX)
_RANGE = re.compile(r"([0-9]{1,%d})-([0-9]{1,%d})" % (NUMBER_MAX, NUMBER_MAX))
_QUOTED = re.compile(r'"[ !#-~]*"')          # printable ASCII, no double quote inside
_GROUP = re.compile(r'\((?:[^()"]|"[^"]*")*\)|<[A-Za-z0-9_]+>|[^,]+')
_CHOICE = re.compile(r'"[^"]*"|[^,]+')


class FormError(ValueError):
    pass


def form_groups(test: str) -> list[list[str] | None]:
    """A test form's parameter groups, one per parameter: '(0-3),("off","on"),<mask>' ->
    [['0-3'], ['"off"', '"on"'], None].  Each alternative is a number, a range a-b or a
    quoted string; a <placeholder> (None) takes letters and digits (a band mask) or a
    quoted printable string.  FormError for anything else (an unbalanced group, an empty
    one, a bare word)."""
    groups: list[list[str] | None] = []
    found = _GROUP.findall(test)
    for group in found:
        if group.startswith("<"):
            groups.append(None)
            continue
        if not (group.startswith("(") and group.endswith(")")):
            raise FormError(f"{group!r} is neither (choices) nor <placeholder>")
        choices = _CHOICE.findall(group[1:-1])
        for choice in choices:
            if not (_NUMBER.fullmatch(choice) or _QUOTED.fullmatch(choice)
                    or ((m := _RANGE.fullmatch(choice)) and int(m[1]) <= int(m[2]))):
                raise FormError(f"{choice!r} in {group} is not a number, a range or a quoted string")
        if not choices:
            raise FormError(f"{group} allows nothing")
        groups.append(choices)
    if ",".join(found) != test:
        raise FormError(f"{test!r} is not a list of (choices) and <placeholders>")
    return groups


def _canonical(token: str, choices: list[str] | None) -> str | None:
    """token as the module shows it when its group allows it, else None: a quoted choice
    in its own spelling ("OFF" is "off"), a number without leading zeros, unless the
    group's are zero-padded ("00"-"99": as many digits as the bounds, kept as given); a
    placeholder takes letters and digits, or a quoted printable string.  A zero-padded
    group whose high bound is longer than its low one is a sequence of codes (AT+QCFG=
    "nwscanseq", "(00-0102030405)"): the low bound alone, or codes as wide as it, each from
    1 to the high bound's largest, none twice, at most as many as the high bound has."""
    quoted = token.startswith('"')
    if quoted and not _QUOTED.fullmatch(token):
        return None
    if choices is None:
        return token if quoted or (token.isascii() and token.isalnum() and len(token) <= 64) else None
    if quoted:
        return next((c for c in choices if c.upper() == token.upper()), None)
    if not _NUMBER.fullmatch(token):
        return None
    for choice in choices:
        if choice.startswith('"'):
            continue
        lo, _, hi = choice.partition("-")
        hi = hi or lo
        if len(lo) > 1 and lo.startswith("0") and len(hi) > len(lo) and len(hi) % len(lo) == 0:
            if _in_sequence(token, lo, hi):
                return token
            continue
        if int(lo) <= int(token) <= int(hi):
            if len(lo) > 1 and lo.startswith("0"):     # zero-padded ("00"-"99"): digits as given
                return token if len(lo) <= len(token) <= len(hi) else None
            return str(int(token))
    return None


def _in_sequence(token: str, lo: str, hi: str) -> bool:
    """token is the sequence group lo-hi's lo, or a sequence of its codes (see _canonical)."""
    if token == lo:
        return True
    width = len(lo)
    if not token or len(token) % width or len(token) > len(hi):
        return False
    codes = [int(token[i:i + width]) for i in range(0, len(token), width)]
    top = max(int(hi[i:i + width]) for i in range(0, len(hi), width))
    return len(set(codes)) == len(codes) and all(1 <= c <= top for c in codes)


def not_as_shown(tokens: list[str], groups: list[list[str] | None]) -> str | None:
    """The first of an item's values that its test form's group does not allow as it stands
    (the module would show it otherwise), or None: the profile's values and the NV file's."""
    return next((t for t, g in zip(tokens, groups) if _canonical(t, g) != t), None)


def _item_command(name: str, table: str) -> None:
    def test(modem) -> list[str]:
        items = modem.profile[table]
        return [f'{name}: "{item}",{spec["test"]}' for item, spec in items.items()]

    def write(modem, cmd):
        item = Args(cmd).str(0, quoted=True, max_len=ITEM_NAME_MAX)
        items = modem.profile[table]
        item = next((k for k in items if k.lower() == item.lower()), None)
        if item is None:
            raise CommandError("ERROR", f"{cmd.raw}: no such item on this module")
        spec = items[item]
        values = device(modem).item_values(table, item)
        given = cmd.args[1:]
        if not given:
            return ok(f'{name}: "{item}",{",".join(values)}')
        most = len(values) + spec.get("extra", 0)          # <effect>, <savetonvram>: not shown
        if len(given) > most:
            raise CommandError("ERROR", f"{cmd.raw}: at most {most} values")
        groups = form_groups(spec["test"])
        new = list(values)
        for i, arg in enumerate(given):
            if arg is None:
                continue                                   # omitted: unchanged
            token = f'"{arg.text}"' if arg.quoted else arg.text
            shown = _canonical(token, groups[i] if i < len(groups) else None)
            if shown is None or (i < len(values) and arg.quoted != values[i].startswith('"')):
                raise CommandError("ERROR", f"{cmd.raw}: value {i + 1} {token} is not in {spec['test']}")
            if i < len(values):
                new[i] = shown
        if new != values:
            values[:] = new
            device(modem).save()
        return ok()

    command(name, WRITE, test=test)(write)


for _name, _table in ITEM_TABLES.items():
    _item_command(_name, _table)
