"""Module profiles: TOML files under profiles/ saying which module is imitated.

A profile is data: identity strings, ranges, defaults, which commands exist (and
which variant of each), response formats that differ, error codes.  Every key is
declared in SCHEMA below with its type and range, so a typo or a bad value stops
start-up with one line naming the file, the key and what is wrong.
"""
from __future__ import annotations

import importlib.resources
import ipaddress
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

# The built-in profiles ship inside the package (emulator/profiles/*.toml; the repository's
# top-level profiles/ is a link to that folder).
PROFILE_DIR = Path(str(importlib.resources.files("emulator") / "profiles"))


class ProfileError(Exception):
    """A profile refused: one line on stderr.  What the file itself holds (a key, a section,
    a command name) is shown with its control characters escaped, so a key holding CR LF or
    an ESC sequence can neither split that line nor drive the terminal."""

    def __init__(self, message: str) -> None:
        super().__init__("".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                                 for c in message))


def _int(lo: int, hi: int) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if not isinstance(v, int) or isinstance(v, bool):
            return f"must be an integer, got {v!r}"
        if not lo <= v <= hi:
            return f"must be in {lo}..{hi}, got {v}"
        return None
    return check


def _str(v: Any) -> str | None:
    return None if isinstance(v, str) else f"must be a string, got {v!r}"


def _template(*fields: str) -> Callable[[Any], str | None]:
    """A line that str.format() fills from these fields (a URC's wording): only plain
    "{field}" replacements (no index, attribute, conversion or format spec: a width of a
    billion would make the line, and the check itself, a gigabyte), on one line."""
    import string

    def check(v: Any) -> str | None:
        why = _wire(v)
        if why:
            return why
        allowed = (f"must use only {', '.join('{' + f + '}' for f in fields)}" if fields
                   else "must use no {field} (this line has none to fill in)")
        try:
            parts = list(string.Formatter().parse(v))
        except ValueError as exc:
            return f"{v!r} {allowed} ({exc})"
        for _, name, spec, conversion in parts:
            if name is not None and (name not in fields or spec or conversion):
                shown = f"{{{name}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}}"
                return f"{v!r} {allowed}{', each as it stands' if fields else ''} (got {shown})"
        return None
    return check


WIRE_MAX = 2048     # characters in one profile string shown on the wire (an ATI line, a template)


def _wire(v: Any, quoted: bool = False) -> str | None:
    """A string the modem puts on the wire as it stands: printable ASCII, so a profile can
    neither break a response's framing (CR, LF: a line of its own, a fake OK) nor, inside
    a quoted field (quoted), end the quotes early; at most WIRE_MAX characters (a module's
    lines are short, and an answer is written whole: one longer than the host's output
    backlog would lose its start to a host that reads all the time)."""
    if not isinstance(v, str):
        return f"must be a string, got {v!r}"
    if len(v) > WIRE_MAX:
        return f"{len(v)} characters: at most {WIRE_MAX}"
    bad = next((c for c in v if not " " <= c <= "~" or (quoted and c == '"')), None)
    if bad is not None:
        what = "a double quote (the value is shown in quotes)" if bad == '"' else f"{bad!r}"
        return f"{v!r} holds {what}: only printable ASCII goes on the wire"
    if not quoted and _FINAL_LINE.fullmatch(v.strip()):
        return f"{v!r} reads as a final result code: a line of it would end the answer early"
    return None


# What a host takes as the end of an answer, as a whole line (V1 forms; _line: the V0 digits)
_FINAL_LINE = re.compile(r"OK|ERROR|NO CARRIER|BUSY|NO ANSWER|NO DIALTONE|CONNECT( .*)?|"
                         r"\+CM[ES] ERROR:.*|SEND (OK|FAIL)", re.IGNORECASE)


def _line(v: Any) -> str | None:
    """A string that is a response line of its own (an identity line, an ATI line, a boot
    URC): as _wire, and not an ATV0 result code either (a digit: a V0 host reads "0<CR>" as
    OK).  (Items shown inside a line -- a [qcfg] value "1" -- may be digits.)"""
    why = _wire(v)
    if why is None and v.strip().isdigit() and len(v.strip()) == 1:
        return f"{v!r} reads as an ATV0 result code: a line of it would end the answer early"
    return why


def _quoted(v: Any) -> str | None:
    return _wire(v, quoted=True)


def _profile_name(v: Any) -> str | None:
    """A name that is also a folder (the default state dir) and a link's suffix."""
    if not isinstance(v, str) or not v or len(v) > 64 or v in (".", "..") \
            or not all(c.isascii() and (c.isalnum() or c in "._-") for c in v):
        return f"must be 1-64 letters, digits, '.', '_' or '-' (it names the state folder), got {v!r}"
    return None


def _number(lo: float, hi: float) -> Callable[[Any], str | None]:
    """An integer or a decimal number (a figure in dB) in lo..hi."""
    def check(v: Any) -> str | None:
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v != v:
            return f"must be a number, got {v!r}"
        if not lo <= v <= hi:
            return f"must be in {lo}..{hi}, got {v}"
        return None
    return check


def _choice(*choices: str) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if v in choices else f"must be one of {', '.join(map(repr, choices))}, got {v!r}"
    return check


def _template_fields(v: str) -> set[str]:
    """The {field}s a (checked) template names."""
    import string
    return {name for _, name, _, _ in string.Formatter().parse(v) if name is not None}


def _error_code(v: Any) -> str | None:
    """An open's failure code: never 0, which +QSSLOPEN: <id>,0 and AT+QIGETERROR report
    as success."""
    return _int(-1000, 1000)(v) or ("must not be 0 (the success code)" if v == 0 else None)


def _cme_code(v: str) -> str | None:
    """A [cme_text] key: a +CME ERROR code as the module prints it ("416")."""
    if not (v.isascii() and v.isdigit() and v == str(int(v)) and int(v) <= 65535):
        return f"key {v!r} is not a +CME ERROR code (a number, 0-65535, as \"416\")"
    return None


def _repeated(values: list) -> Any:
    """The first value listed a second time, else None (a set: lists run to 10,000 items)."""
    seen = set()
    for value in values:
        if value in seen:
            return value
        seen.add(value)
    return None


def _bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else f"must be true or false, got {v!r}"


def _list(item: Callable, min_len: int = 0, max_len: int = 10_000) -> Callable:
    def check(v: Any) -> str | None:
        if not isinstance(v, list):
            return f"must be a list, got {v!r}"
        if not min_len <= len(v) <= max_len:
            return f"must have {min_len}..{max_len} items, got {len(v)}"
        for i, x in enumerate(v):
            why = item(x)
            if why:
                return f"item {i}: {why}"
        return None
    return check


def _ipv4(v: Any) -> str | None:
    if not isinstance(v, str):
        return f"must be an IPv4 address string, got {v!r}"
    try:
        ipaddress.IPv4Address(v)
    except ValueError:
        return f"{v!r} is not an IPv4 address"
    return None


def _digits(lo: int, hi: int, alphabet: str = "0123456789", what: str = "digits") -> Callable[[Any], str | None]:
    """An identity number as the module prints it (IMEI 14-16 digits, IMSI 6-15 digits: its
    first five are the default PLMN, an ICCID 18-22 hex digits: some carry letters)."""
    def check(v: Any) -> str | None:
        if not isinstance(v, str) or not lo <= len(v) <= hi or any(c not in alphabet for c in v):
            return f"must be {lo}-{hi} {what}, got {v!r}"
        return None
    return check


def _plmn(v: Any) -> str | None:
    if not isinstance(v, str) or not v.isascii() or not v.isdigit() or len(v) not in (5, 6):
        return f"must be the MCC and MNC as 5 or 6 digits (\"46001\", \"310260\"), got {v!r}"
    return None


_HEX_ID = re.compile(r"0[xX][0-9A-Fa-f]{1,4}")


def _hex_id(v: Any) -> str | None:
    """A cipher suite id as AT+QSSLCFG="ciphersuite" takes it: 0X and one to four hex
    digits (check_ssl writes it as the module shows it, "0X002F")."""
    if not isinstance(v, str) or not _HEX_ID.fullmatch(v):
        return f"must be 0X and 1-4 hex digits, like \"0X0035\", got {v!r}"
    return None


def _item(v: Any) -> str | None:
    """An AT+QCFG-style item (emulator/commands/device.py): value = the wire tokens its read
    form shows ('"pulse"', "120"), test = its test form's groups, one per parameter, extra =
    how many more parameters a write takes and does not show (<effect>, <savetonvram>)."""
    from emulator.commands.device import FormError, form_groups, not_as_shown
    if not isinstance(v, dict):
        return f"must be a table {{ value = [...], test = \"...\" }}, got {v!r}"
    unknown = sorted(set(v) - {"value", "test", "extra"})
    if unknown:
        return f"unknown field {unknown[0]!r} (value, test, extra)"
    for key in ("value", "test"):
        if key not in v:
            return f"{key}: missing"
    why = _list(_wire, 1, 16)(v["value"]) or _wire(v["test"]) or _int(0, 4)(v.get("extra", 0))
    if why:
        return why
    try:
        groups = form_groups(v["test"])
    except FormError as exc:
        return f"test {v['test']!r}: {exc}"
    if len(groups) != len(v["value"]) + v.get("extra", 0):
        return (f"test {v['test']!r} has {len(groups)} groups for {len(v['value'])} values and "
                f"{v.get('extra', 0)} extra parameters (one group each)")
    token = not_as_shown(v["value"], groups)
    if token is not None:
        return f"value {token!r} is not one the test form {v['test']!r} allows (as the module shows it)"
    return None


# Items in one item table: its test command lists every one in a single answer, which must
# fit the smallest serial.output_backlog (256 KiB) with each line at its longest (WIRE_MAX).
ITEMS_MAX = 64


def _csq(v: Any) -> str | None:
    """AT+CSQ's <rssi>,<ber>: what its test form offers, (0-31,99),(0-7,99)."""
    why = _list(_int(0, 99), 2, 2)(v)
    if why:
        return why
    rssi, ber = v
    if not (rssi <= 31 or rssi == 99) or not (ber <= 7 or ber == 99):
        return f"{v!r}: <rssi> must be 0-31 or 99 and <ber> 0-7 or 99 (AT+CSQ's test form)"
    return None


def _items(v: Any) -> str | None:
    """An item table: names the commands can address (printable ASCII without quotes or
    '.', at most ITEM_NAME_MAX, unique without regard to case), each an _item, at most
    ITEMS_MAX of them."""
    from emulator.commands.device import ITEM_NAME_MAX
    if not isinstance(v, dict):
        return f"must be a table, got {v!r}"
    if len(v) > ITEMS_MAX:
        return (f"{len(v)} items: at most {ITEMS_MAX} (the test command lists them all in one answer, "
                f"which must fit the port's output backlog)")
    seen: set[str] = set()
    for name in v:
        why = _quoted(name)
        if why or "." in name or not 1 <= len(name) <= ITEM_NAME_MAX:
            return f"item name {name!r}: 1-{ITEM_NAME_MAX} printable ASCII characters, no '\"' or '.'"
        if name.lower() in seen:
            return f"item name {name!r}: listed twice (names are case-insensitive)"
        seen.add(name.lower())
    return _table(_item)(v)


def _table(value: Callable, key: Callable[[str], str | None] | None = None) -> Callable:
    def check(v: Any) -> str | None:
        if not isinstance(v, dict):
            return f"must be a table, got {v!r}"
        for k, x in v.items():
            why = key(k) if key is not None else None
            if why:
                return why
            why = value(x)
            if why:
                return f"[{k}] {why}"
        return None
    return check


# key path -> (required, check)
SCHEMA: dict[str, tuple[bool, Callable]] = {
    "profile.name": (True, _profile_name),
    "profile.description": (False, _str),
    "identity.manufacturer": (True, _line),
    "identity.model": (True, _line),
    "identity.revision": (True, _line),
    "identity.imei": (True, _digits(14, 16)),
    "identity.imsi": (True, _digits(6, 15)),
    "identity.svn": (False, _digits(2, 2)),          # AT+CGSN=2/3 (the "27007" variant)
    "identity.iccid": (True, _digits(18, 22, "0123456789ABCDEFabcdef", "hex digits")),
    "identity.ati": (True, _list(_line, 1, 32)),
    "network.csq": (True, _csq),
    "network.operator": (True, _quoted),
    "network.act": (True, _int(0, 9)),
    "network.reg_stat": (True, _int(0, 5)),
    "network.plmn": (False, _plmn),
    "defaults.echo": (True, _bool),
    "defaults.verbose": (True, _bool),
    "defaults.cmee": (True, _int(0, 2)),
    "defaults.ipr": (True, _int(0, 4_000_000)),
    "defaults.timezone_quarters": (True, _int(-96, 96)),
    "defaults.boot_urcs": (False, _list(_line, 0, 64)),
    # Each boot URC's offset in ms from the first (RDY), non-decreasing, one per line.
    # Absent: all at once.
    "defaults.boot_urc_ms": (False, _list(_int(0, 600_000))),
    "defaults.qpowd_power_on_ms": (False, _int(0, 600_000)),
    "serial.baud_rates": (True, _list(_int(1, 4_000_000), 1)),   # (AT+IPR=? adds 0, auto-baud)
    "serial.line_max": (True, _int(64, 65536)),
    # An LF that follows a command line's CR by at most this long belongs to the line,
    # also when it arrives after the data prompt the line opened (hosts writing CR LF
    # one byte at a time).
    "serial.lf_window_ms": (False, _int(0, 1000)),
    # Bytes the host has not read yet, past which the oldest are dropped (a UART whose
    # receiver stalls loses them too).
    # At least what a paced answer (64 KiB waiting + a 64 KiB piece) and a held AT+IFC
    # port's last command line may queue, or "never dropped" would not hold.
    "serial.output_backlog": (False, _int(256 * 1024, 1 << 30)),
    "pdp.first_id": (True, _int(0, 255)),
    "pdp.last_id": (True, _int(0, 255)),
    "pdp.address_pool": (True, _ipv4),
    "pdp.default_apn": (True, _quoted),
    # The primary and secondary DNS servers the network assigns (AT+QIDNSCFG, AT+CGCONTRDP).
    "pdp.dns": (False, _list(_ipv4, 2, 2)),
    # The URC when the network deactivates context {cid} (absent: the family reports only
    # its sockets' closes, as the ML302 manual documents no such URC).
    "pdp.deact_urc": (False, _template("cid")),
    "files.ufs_capacity": (True, _int(0, 1 << 34)),
    "files.ram_capacity": (True, _int(0, 1 << 34)),
    "files.max_name_len": (True, _int(1, 255)),
    # AT+QFOPEN: the first handle it gives (then the lowest free one up) and how many files
    # may be open at once (absent: 1 and 10).
    "files.first_handle": (False, _int(0, 2**31 - 1 - 1024)),
    "files.max_open": (False, _int(1, 1024)),
    "ssl.contexts": (True, _int(1, 64)),
    "ssl.sockets": (True, _int(1, 64)),
    "ssl.send_max": (True, _int(1, 65535)),
    "ssl.recv_max": (True, _int(1, 65535)),
    "ssl.send_buffer": (True, _int(1, 1 << 24)),
    "ssl.recv_buffer": (True, _int(1, 1 << 24)),
    # Transparent mode: unsent bytes per connection past which the pty is not read.
    "ssl.online_buffer": (False, _int(4096, 1 << 26)),
    # The module's suites, in offer order (0XFFFF = these).  Absent: the EC2x note's
    # Table 3, whose one source is tls_engine/ciphers.py (CIPHER_TABLE).
    "ssl.cipher_suites": (False, _list(_hex_id, 1)),
    # The SSL family (emulator/sockets/dialects.py): URC wording and context defaults;
    # the [commands] variant of every AT+QSSL command must be the same name.  Absent: "quectel".
    "ssl.dialect": (False, _str),
    # The AT+QSSLCFG options the module has, in its test form's order: a subset of the
    # dialect's (checked in check_ssl).  Absent: the dialect's default_options (a Quectel:
    # the EC2x's, without the BG96's checkhost and ignorecertchain).
    "ssl.options": (False, _list(_str, 1)),
    # A code per failure kind; "unknown" is the one for every kind not listed.
    "ssl.errors": (True, _table(_error_code)),
    "ssl.at_port": (False, _quoted),
    "ssl.verify_hostname": (False, _bool),   # absent = true (check the dialled name; with
                                             # "checkhost" listed: that option's default)
    # seclevel 2 with neither clientcert nor clientkey set: true = the open fails (the ML302
    # manual, 2.1 remark: server and client authentication need the client pair); absent or
    # false = no client certificate is offered (the EC2x note, sec. 4 item 3: the pair is
    # needed only when the server requires client authentication).
    "ssl.client_pair_required": (False, _bool),
    # AT+QSSLCFG="clientkey",<ctx>,<path>[,<key_pwd>]: an encrypted client key's password
    # (a real EG25-G's test form lists it; the EC2x note 1.1 does not); absent or false: none.
    "ssl.clientkey_password": (False, _bool),
    # TCP(IP) AT commands (AT+QIOPEN & co., emulator/sockets/tcpip.py); absent: no such commands.
    "tcpip.sockets": (False, _int(1, 64)),          # <connectID>s, one pool with the SSL clientIDs
    "tcpip.send_max": (False, _int(1, 65535)),      # AT+QISEND <send_length>
    "tcpip.recv_max": (False, _int(1, 65535)),      # AT+QIRD <read_length>, a push URC's data
    "tcpip.sendex_max": (False, _int(1, 65535)),    # AT+QISENDEX bytes (twice as many hex digits)
    "tcpip.send_buffer": (False, _int(1, 1 << 24)),
    "tcpip.recv_buffer": (False, _int(1, 1 << 24)),
    "tcpip.online_buffer": (False, _int(4096, 1 << 26)),
    "tcpip.at_port": (False, _quoted),
    # Command name ("+QSSLOPEN", "I", "+CSQ") -> ms its answer is held back, as a real
    # module's latency (the interpreter's "slow" mechanism, on the modem's timers; a
    # control-API "slow" on the same command: the larger delay counts).  Absent: none.
    "timing.response_delay_ms": (False, _table(_int(0, 600_000))),
    # What the device commands report (emulator/commands/device.py), needed where the
    # profile lists the command (COMMAND_NEEDS).
    "identity.gcap": (False, _wire),                   # AT+GCAP's list ("+CGSM")
    "identity.firmware": (False, _wire),               # AT+QGMR; absent: identity.revision
    "network.rat": (False, _quoted),                   # AT+QNWINFO <act> ("FDD LTE")
    "network.band": (False, _quoted),                  # AT+QNWINFO <band> ("LTE BAND 3")
    "network.channel": (False, _int(0, 1 << 20)),      # AT+QNWINFO <channel> (EARFCN)
    "network.sms_center": (False, _quoted),            # AT+CSCA? <sca> ("+8613010112500")
    # AT+QCSQ's line after "+QCSQ: ": {rssi} from network.csq; {rsrp} {rsrq} {sinr} the serving
    # cell's (cell.*, which a template naming them needs; {sinr} in AT+QCSQ's 1/5 dB steps).
    "network.qcsq": (False, _template("rssi", "rsrp", "rsrq", "sinr")),
    "device.battery": (False, _list(_int(0, 100_000), 3, 3)),     # AT+CBC <bcs>,<bcl>,<voltage mV>
    # The serving cell (AT+QENG="servingcell" and "neighbourcell", AT+QCSQ's figures, the
    # <tac>/<ci> of AT+CREG/CGREG/CEREG=2).  Absent: fixed location fields, no AT+QENG.
    "cell.id": (False, _digits(1, 7, "0123456789ABCDEF", "upper-case hex digits")),   # E-UTRAN cell id
    "cell.tac": (False, _digits(1, 4, "0123456789ABCDEF", "upper-case hex digits")),  # tracking area
    "cell.pci": (False, _int(0, 503)),                 # physical cell id
    "cell.band": (False, _int(1, 255)),                # <freq_band_ind>: the band of network.band
    "cell.duplex": (False, _choice("FDD", "TDD")),
    "cell.ul_bandwidth": (False, _int(0, 5)),          # 0-5: 1.4, 3, 5, 10, 15, 20 MHz
    "cell.dl_bandwidth": (False, _int(0, 5)),
    "cell.rsrp": (False, _int(-140, -44)),             # dBm
    "cell.rsrq": (False, _int(-30, 0)),                # dB
    "cell.sinr": (False, _number(-20, 30)),            # dB (AT+QENG: whole dB; AT+QCSQ: 1/5 dB steps)
    "cell.srxlev": (False, _int(-140, 140)),           # cell selection level (dB)
    "cell.neighbours": (False, _list(_wire, 0, 32)),   # AT+QENG="neighbourcell" lines after "+QENG: "
    # AT+CEER: its line after "+CEER: " ({text}), and the text of each cause
    # (emulator/modem/packet_events.py): none yet, an activation refused with the radio off
    # or no network, a context deactivated (by the host, or by the network while registered),
    # contexts lost with the registration.
    "ceer.report": (False, _template("text")),
    "ceer.none": (False, _quoted),
    "ceer.radio_off": (False, _quoted),
    "ceer.no_service": (False, _quoted),
    "ceer.deactivated": (False, _quoted),
    "ceer.link_lost": (False, _quoted),
    # The +CGEV URCs AT+CGEREP enables: a context the host activated / deactivated, one the
    # network deactivated ({cid}), the packet domain detached by the host / the network.
    "cgev.me_pdn_act": (False, _template("cid")),
    "cgev.me_pdn_deact": (False, _template("cid")),
    "cgev.nw_pdn_deact": (False, _template("cid")),
    "cgev.me_detach": (False, _template()),
    "cgev.nw_detach": (False, _template()),
    # AT+QCFG / AT+QURCCFG / AT+QINDCFG items: "<item>" = { value, test[, extra] }.
    "qcfg": (False, _items),
    "qurccfg": (False, _items),
    "qindcfg": (False, _items),
    "qgpscfg": (False, _items),                        # AT+QGPSCFG items ("outport", "nmeasrc")
    # The GNSS fix AT+QGPSLOC reports (emulator/commands/gnss.py): where, how well, and how
    # many seconds after AT+QGPS=1 the engine gets it.
    "gnss.latitude": (False, _number(-90, 90)),        # decimal degrees, + north
    "gnss.longitude": (False, _number(-180, 180)),     # decimal degrees, + east
    "gnss.altitude": (False, _number(-1000, 20000)),   # metres above sea level
    "gnss.hdop": (False, _number(0, 99.9)),
    "gnss.fix": (False, _int(2, 3)),                   # 2: 2D, 3: 3D
    "gnss.nsat": (False, _int(0, 99)),                 # satellites used
    "gnss.cog": (False, _number(0, 359.99)),           # course over ground, degrees
    "gnss.speed": (False, _number(0, 1000)),           # km/h (knots derived)
    "gnss.ttff": (False, _int(0, 600)),                # time to first fix, seconds
    "commands": (True, _table(_str)),
    "cme_text": (False, _table(_wire, _cme_code)),
}
_SECTIONS = {k.split(".")[0] for k in SCHEMA}


@dataclass(frozen=True)
class Profile:
    name: str
    path: Path
    data: dict
    # key -> value found (the loaded data never change): handlers read "ssl.send_max" and
    # the like on every command, and a dotted walk per read showed in the profiles
    _found: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def get(self, key: str, default: Any = None) -> Any:
        found = self._found.get(key, _MISSING)
        if found is not _MISSING:
            return found
        node = _lookup(self.data, key)
        if node is _MISSING:
            return default
        self._found[key] = node
        return node

    def __getitem__(self, key: str) -> Any:
        value = self._found.get(key, _MISSING)
        if value is not _MISSING:
            return value
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def command_variant(self, name: str) -> str | None:
        """The variant of `name` this module has, or None when it lacks it."""
        return self.data["commands"].get(name.upper())


_MISSING = object()


def resolve_profile_path(spec: str) -> Path:
    """"ec2x" / "ml302" name a built-in profile; anything else is a path."""
    if spec.endswith(".toml") or "/" in spec:
        return Path(spec)
    return PROFILE_DIR / f"{spec}.toml"


def _toml_where(text: str, message: str) -> str:
    """What tomllib's "(at line N, column C)" points at, so the one line names the key: a
    key given twice ("Cannot overwrite a value") as table.key, else the line's text."""
    found = re.search(r"\(at line (\d+), column \d+\)", message)
    lines = text.splitlines()
    if not found or not 0 < int(found.group(1)) <= len(lines):
        return ""
    number = int(found.group(1))
    if number == 1 and text.startswith("\ufeff"):
        return ": the file begins with a byte order mark (U+FEFF, as some editors save UTF-8)"
    line = lines[number - 1].strip()
    key = line.split("=", 1)[0].strip() if "=" in line else ""
    if message.startswith("Cannot overwrite a value") and re.fullmatch(r"[A-Za-z0-9_.\"+ -]+", key or "="):
        header = next((h.split("#", 1)[0].strip() for h in reversed(lines[:number - 1])
                       if h.lstrip().startswith("[")), "")
        if not header or re.fullmatch(r"\[[^\[\]]+\]", header):
            table = header[1:-1].strip()
            return f": key {table + '.' if table else ''}{key} is given twice"
    shown = line if len(line) <= 80 else line[:77] + "..."
    return f": line {number} is {shown!r}"


PROFILE_MAX = 64 << 20          # bytes: a profile is a few KiB; a file that never ends is refused


def read_limited(path, limit: int = PROFILE_MAX) -> bytes:
    """A TOML file's bytes (a profile, --config, a scenario), at most `limit`: one that is
    longer -- /dev/zero, a log given by mistake -- is ValueError, never all of memory."""
    with open(path, "rb") as f:
        raw = f.read(limit + 1)
    if len(raw) > limit:
        raise ValueError(f"larger than {limit >> 20} MiB: not a TOML file of settings")
    return raw


def load_settings_toml(path) -> dict:
    """--config's and a scenario's TOML: read_limited, UTF-8, line ends as a text-mode read
    gives them (Path.read_text, which they used before).  A parse error's message points
    where a profile's does (_toml_where: a byte order mark at the start, a key given twice,
    the line's text)."""
    text = read_limited(path).decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise tomllib.TOMLDecodeError(f"{exc}{_toml_where(text, str(exc))}") from None


def load_profile(spec: str) -> Profile:
    path = resolve_profile_path(spec)
    try:
        raw = read_limited(path)
    except ValueError as exc:
        raise ProfileError(f"profile {path}: {exc}") from None
    except OSError as exc:
        if path.parent == PROFILE_DIR and isinstance(exc, FileNotFoundError):
            built_in = ", ".join(sorted(p.stem for p in PROFILE_DIR.glob("*.toml")))
            raise ProfileError(f"no built-in profile {spec!r} (they are {built_in}; or give a "
                               f"profile .toml path)") from None
        raise ProfileError(f"profile {path}: cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
        data = tomllib.loads(text)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        where = _toml_where(text, str(exc)) if isinstance(exc, tomllib.TOMLDecodeError) else ""
        raise ProfileError(f"profile {path}: not valid TOML: {exc}{where}") from None
    except RecursionError:      # tomllib recurses per level of nested arrays / inline tables
        raise ProfileError(f"profile {path}: not valid TOML: nested too deeply") from None
    validate(data, path)
    check_commands(data["commands"], path)
    check_ssl(data, path)
    return Profile(data["profile"]["name"], path, data)


def check_commands(commands: dict[str, str], path: Path) -> None:
    """Every [commands] entry must name a command and a variant the code has."""
    from emulator import commands as _handlers  # noqa: F401  (fills the table)
    from emulator.at.registry import TABLE
    for name, variant in commands.items():
        variants = TABLE.variants(name.upper())
        if not variants:
            raise ProfileError(f'profile {path}: key commands."{name}": no such command in the emulator')
        if variant not in variants:          # (a generic command's one name is "*": an old
            known = ", ".join(sorted(variants))   # "ec2x"/"ml302" or a typo is refused there too)
            raise ProfileError(f'profile {path}: key commands."{name}": unknown variant '
                               f'{variant!r} (known: {known})')


def check_ssl(data: dict, path: Path) -> None:
    """ssl.dialect, ssl.options and the AT+QSSL command variants agree; the absent
    keys get their defaults (the dialect's default options, the EC2x cipher table)."""
    from tls_engine.ciphers import CIPHER_TABLE
    from emulator.sockets.dialects import DIALECTS, options_problem
    ssl = data["ssl"]
    dialect = ssl.setdefault("dialect", "quectel")
    if dialect not in DIALECTS:
        raise ProfileError(f"profile {path}: key ssl.dialect: must be one of "
                           f"{', '.join(map(repr, DIALECTS))}, got {dialect!r}")
    options = ssl.setdefault("options", list(DIALECTS[dialect].options_by_default))
    why = options_problem(dialect, options)
    if why:
        raise ProfileError(f"profile {path}: key ssl.options: {why}")
    suites = ssl.setdefault("cipher_suites", [suite.code for suite in CIPHER_TABLE.values()])
    unknown = next((code for code in suites if int(code, 16) not in CIPHER_TABLE), None)
    if unknown is not None:
        raise ProfileError(f"profile {path}: key ssl.cipher_suites: {unknown} is not a suite the emulator "
                           f"can offer (tls_engine/ciphers.py CIPHER_TABLE)")
    # As AT+QSSLCFG=? shows them ("0x2f" is 0X002F), each once: the list is what 0XFFFF offers.
    ssl["cipher_suites"] = [CIPHER_TABLE[int(code, 16)].code for code in suites]
    twice = _repeated(ssl["cipher_suites"])
    if twice is not None:
        raise ProfileError(f"profile {path}: key ssl.cipher_suites: {twice} is listed twice")
    from emulator.sockets.service import OPEN_FAILURES
    kind = next((k for k in ssl["errors"] if k not in OPEN_FAILURES), None)
    if kind is not None:
        raise ProfileError(f"profile {path}: key ssl.errors: {kind!r} is not a failure kind "
                           f"(known: {', '.join(sorted(OPEN_FAILURES))})")
    if "unknown" not in ssl["errors"]:
        raise ProfileError(f"profile {path}: key ssl.errors: no \"unknown\" (the code of every failure "
                           f"kind the table does not list)")
    if dialect == "quectel":
        # (AT+QIGETERROR reports the last open's code: Quectel's are 5xx, positive; a
        # negative one -- the OneMO's -1 -- would read there as "operate successfully")
        negative = next((k for k, code in ssl["errors"].items() if code < 0), None)
        if negative is not None:
            raise ProfileError(f"profile {path}: key ssl.errors.{negative}: {ssl['errors'][negative]} is negative; "
                               f"the quectel dialect's codes are positive (AT+QIGETERROR reports them)")
    for name, variant in data["commands"].items():
        if name.upper().startswith("+QSSL") and variant not in (dialect, "*"):
            raise ProfileError(f'profile {path}: key commands."{name}": variant {variant!r} '
                               f'but ssl.dialect is {dialect!r} (they name the same family)')


def command_name(name: str) -> str:
    """A command as the [commands] table names it ("at+qsslopen" -> "+QSSLOPEN"; a bare
    "AT" -> ""): timing.response_delay_ms keys, the control API's "slow", scenario triggers."""
    name = name.strip().upper()
    return name[2:] if name.startswith("AT") else name


TCPIP_REQUIRED = ("sockets", "send_max", "recv_max", "sendex_max", "send_buffer", "recv_buffer")
TCPIP_COMMANDS = ("+QIOPEN", "+QICLOSE", "+QISTATE", "+QISEND", "+QISENDEX", "+QIRD", "+QISDE")


def check_tcpip(data: dict, path: Path) -> None:
    """A [tcpip] table has every key its service needs; the TCP/IP commands need the table."""
    tcpip = data.get("tcpip")
    if tcpip is None:
        listed = [name for name in TCPIP_COMMANDS if name in data.get("commands", {})]
        if listed:
            raise ProfileError(f"profile {path}: [commands] lists {listed[0]} but there is no [tcpip] table")
        return
    for key in TCPIP_REQUIRED:
        if key not in tcpip:
            raise ProfileError(f"profile {path}: key tcpip.{key}: missing")


GNSS_KEYS = ("gnss.latitude", "gnss.longitude", "gnss.altitude", "gnss.hdop", "gnss.fix",
             "gnss.nsat", "gnss.cog", "gnss.speed", "gnss.ttff")

# Commands whose answers come from profile keys that are optional otherwise.
COMMAND_NEEDS = {
    "+QNWINFO": ("network.rat", "network.band", "network.channel"),
    "+QCSQ": ("network.qcsq",),
    "+CSCA": ("network.sms_center",),
    "+QENG": ("network.channel", "cell.id", "cell.tac", "cell.pci", "cell.band", "cell.duplex",
              "cell.ul_bandwidth", "cell.dl_bandwidth", "cell.rsrp", "cell.rsrq", "cell.sinr",
              "cell.srxlev", "cell.neighbours"),
    "+CEER": ("ceer.report", "ceer.none", "ceer.radio_off", "ceer.no_service", "ceer.deactivated",
              "ceer.link_lost"),
    "+CGEREP": ("cgev.me_pdn_act", "cgev.me_pdn_deact", "cgev.nw_pdn_deact", "cgev.me_detach",
                "cgev.nw_detach"),
    "+GCAP": ("identity.gcap",),
    "+CBC": ("device.battery",),
    "+QCFG": ("qcfg",),
    "+QURCCFG": ("qurccfg",),
    "+QINDCFG": ("qindcfg",),
    "+QGPSCFG": ("qgpscfg",),
    "+QGPS": GNSS_KEYS,
    "+QGPSLOC": GNSS_KEYS,
}


def _lookup(data: dict, key: str) -> Any:
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def validate(data: dict, path: Path) -> None:
    for section, body in data.items():
        if section not in _SECTIONS:
            raise ProfileError(f"profile {path}: unknown section [{section}]")
        if section in SCHEMA:            # a table of free keys ([commands], [qcfg] ...): its check
            continue
        if not isinstance(body, dict):
            raise ProfileError(f"profile {path}: key {section}: must be a table")
        for key in body:
            if f"{section}.{key}" not in SCHEMA:
                raise ProfileError(f"profile {path}: key {section}.{key}: unknown key")
    for key, (required, check) in SCHEMA.items():
        node = _lookup(data, key)
        if node is _MISSING:
            if required:
                raise ProfileError(f"profile {path}: key {key}: missing")
            continue
        why = check(node)
        if why:
            raise ProfileError(f"profile {path}: key {key}: {why}")
    commands: dict[str, str] = {}
    for name, variant in data["commands"].items():     # looked up upper case (command_variant)
        if not name.isascii():      # ("+QıOPEN".upper() is "+QIOPEN": a name no host can type)
            raise ProfileError(f'profile {path}: key commands."{name}": a command name is ASCII')
        if name.upper() in commands:
            raise ProfileError(f'profile {path}: key commands."{name}": listed twice (names are case-insensitive)')
        commands[name.upper()] = variant
    data["commands"] = commands
    check_tcpip(data, path)
    qcsq = _lookup(data, "network.qcsq")
    if qcsq is not _MISSING:
        missing = next((f for f in sorted(_template_fields(qcsq)) if f != "rssi"
                        and _lookup(data, f"cell.{f}") is _MISSING), None)
        if missing is not None:
            raise ProfileError(f"profile {path}: key network.qcsq: uses {{{missing}}}, which needs cell.{missing}")
    for name, needs in COMMAND_NEEDS.items():
        if name in commands:
            missing = next((key for key in needs if _lookup(data, key) is _MISSING), None)
            if missing is not None:
                raise ProfileError(f"profile {path}: [commands] lists {name}, which needs {missing}")
    delayed: set[str] = set()
    for name in data.get("timing", {}).get("response_delay_ms", {}):
        command = command_name(name)
        if command not in data["commands"]:
            raise ProfileError(f'profile {path}: key timing.response_delay_ms."{name}": '
                               f"not a command of the profile's [commands]")
        if command in delayed:
            raise ProfileError(f'profile {path}: key timing.response_delay_ms."{name}": its command is '
                               f'listed twice (names are case-insensitive, "AT" optional)')
        delayed.add(command)
    if data["defaults"]["ipr"] not in (0, *data["serial"]["baud_rates"]):
        raise ProfileError(f"profile {path}: key defaults.ipr: {data['defaults']['ipr']} is not 0 (auto-baud) "
                           f"or one of serial.baud_rates")
    twice = _repeated(data["serial"]["baud_rates"])
    if twice is not None:
        raise ProfileError(f"profile {path}: key serial.baud_rates: {twice} is listed twice")
    # A send the command takes must fit what the socket queues, or every send that long
    # would be SEND FAIL on an idle connection.
    for table, largest in (("ssl", ("send_max",)), ("tcpip", ("send_max", "sendex_max"))):
        body = data.get(table)
        if body is None:
            continue
        biggest = max(largest, key=lambda k: body[k])
        if body["send_buffer"] < body[biggest]:
            raise ProfileError(f"profile {path}: key {table}.send_buffer: {body['send_buffer']} is less than "
                               f"{table}.{biggest} = {body[biggest]} (a send that long could never be queued)")
    # AT+QISENDEX=<connectID>,"<hex string>": the largest send the test form offers (twice as
    # many hex digits) must fit a command line, or every long one would be ERROR.
    tcpip = data.get("tcpip")
    if tcpip is not None and "+QISENDEX" in {name.upper() for name in data["commands"]}:
        longest = len('+QISENDEX=,""') + len(str(max(data["ssl"]["sockets"] - 1, 0))) + 2 * tcpip["sendex_max"]
        if data["serial"]["line_max"] < longest:
            raise ProfileError(f"profile {path}: key serial.line_max: {data['serial']['line_max']} is less than "
                               f"the {longest} characters of an AT+QISENDEX of tcpip.sendex_max = "
                               f"{tcpip['sendex_max']} bytes (so long a send could never be typed)")
    tcpip_sockets = data.get("tcpip", {}).get("sockets")
    if tcpip_sockets is not None and tcpip_sockets != data["ssl"]["sockets"]:
        raise ProfileError(f"profile {path}: key tcpip.sockets: {tcpip_sockets}, but SSL clientIDs and TCP/IP "
                           f"connectIDs are one pool of ssl.sockets = {data['ssl']['sockets']}")
    boot_ms = data["defaults"].get("boot_urc_ms")
    if boot_ms is not None:
        if len(boot_ms) != len(data["defaults"].get("boot_urcs", [])):
            raise ProfileError(f"profile {path}: key defaults.boot_urc_ms: {len(boot_ms)} offsets for "
                               f"{len(data['defaults'].get('boot_urcs', []))} defaults.boot_urcs (one each)")
        if boot_ms and boot_ms[0] != 0:
            raise ProfileError(f"profile {path}: key defaults.boot_urc_ms: the first is RDY's own "
                               f"(the others count from it): 0, got {boot_ms[0]}")
        if any(a > b for a, b in zip(boot_ms, boot_ms[1:])):
            raise ProfileError(f"profile {path}: key defaults.boot_urc_ms: offsets must not decrease")
    pdp = data["pdp"]
    if pdp["first_id"] > pdp["last_id"]:
        raise ProfileError(f"profile {path}: key pdp.last_id: smaller than pdp.first_id")
    contexts = pdp["last_id"] - pdp["first_id"] + 1       # each active one takes the next address
    if int(ipaddress.IPv4Address(pdp["address_pool"])) + contexts - 1 > 0xFFFFFFFF:
        raise ProfileError(f"profile {path}: key pdp.address_pool: {pdp['address_pool']} leaves fewer "
                           f"than the {contexts} addresses its contexts take")
