"""Port settings a host changes with V.250 commands (ATE, ATV, ATQ, ATX, S registers,
AT+CMEE, AT+IPR, AT+IFC, AT+ICF, AT&C, AT&D).  AT&F restores the profile's factory
values, AT&W saves the current ones (to <state_dir>/settings.json, 0600, atomically),
ATZ restores the saved.  A saved file is checked key by key on load (see load)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from emulator.logsafe import get_logger
from emulator.storage.atomic_file import atomic_write, read_plain, remove_stale_temp_files

log = get_logger("emulator.settings")

# The S registers a host may set (ATSn=) and their ranges; a saved file is checked with them too.
SREG_RANGES = {0: (0, 255), 3: (0, 127), 4: (0, 127), 5: (0, 127), 6: (2, 10),
               7: (0, 255), 8: (0, 255), 10: (1, 254), 12: (0, 255)}


@dataclass
class Settings:
    echo: bool = True
    verbose: bool = True
    quiet: bool = False
    cmee: int = 1
    ipr: int = 115200
    ifc: tuple[int, int] = (0, 0)
    icf: tuple[int, int] = (3, 3)     # AT+ICF <format>,<parity>: 8 data 0 parity 1 stop (a pty is 8-bit)
    dcd: int = 1          # AT&C
    dtr: int = 2          # AT&D
    x: int = 4            # ATX (which CONNECT / BUSY codes a dial would report: only AT&V shows it)
    sreg: dict[int, int] = field(default_factory=lambda: {0: 0, 3: 13, 4: 10, 5: 8, 6: 2,
                                                          7: 0, 8: 2, 10: 15, 12: 50})
    # The profile's AT+IPR rates, to check a saved file against; not saved itself.
    ipr_rates: tuple[int, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def factory(cls, profile) -> "Settings":
        return cls(echo=profile["defaults.echo"], verbose=profile["defaults.verbose"],
                   cmee=profile["defaults.cmee"], ipr=profile["defaults.ipr"],
                   ipr_rates=tuple(profile["serial.baud_rates"]))

    def copy(self) -> "Settings":
        return Settings(**{**asdict(self), "sreg": dict(self.sreg)})

    # AT&W / ATZ persistence ------------------------------------------------
    def save(self, path: Path | None) -> None:
        """Atomically (temp file, fsync, rename): a kill leaves the old or the new file."""
        if path is None:
            return
        atomic_write(path, json.dumps(self.saved_form()).encode())

    def saved_form(self) -> dict:
        """What settings.json holds for these settings (JSON values)."""
        data = asdict(self)
        del data["ipr_rates"]
        data["sreg"] = {str(k): v for k, v in self.sreg.items()}
        return data

    @classmethod
    def load(cls, path: Path | None, fallback: "Settings") -> "Settings":
        """The saved settings, checked key by key: a hand-edited file must never make
        the modem deaf.  A missing, mistyped or out-of-range key takes the fallback's
        value with one warning naming it; the good keys are kept."""
        if path is None:
            return fallback.copy()
        if path.parent.is_dir():
            remove_stale_temp_files(path.parent)     # a kill during AT&W
        if not path.exists():
            return fallback.copy()
        try:
            data = json.loads(read_plain(path))
        except (OSError, ValueError, RecursionError) as exc:     # (RecursionError: nested too deep)
            log.warning("ignoring unreadable saved settings %s: %s", path, exc)
            return fallback.copy()
        if not isinstance(data, dict):
            log.warning("ignoring saved settings %s: not a JSON object", path)
            return fallback.copy()
        settings = fallback.copy()

        def bad(key: str, why: str, default) -> None:
            log.warning("saved settings %s: key %s: %s; using the default %r", path, key, why, default)

        saved_keys = [f.name for f in fields(cls) if f.name != "ipr_rates"]
        for key in sorted(data.keys() - set(saved_keys)):
            log.warning("saved settings %s: key %s: unknown, ignored", path, key)
        for name in saved_keys:
            if name not in data and name in _ADDED_LATER:
                pass                     # a file saved before the key existed: the default, quietly
            elif name not in data:
                bad(name, "missing", getattr(fallback, name))
            elif name == "sreg":
                settings.sreg = _load_sreg(data["sreg"], fallback.sreg, path, bad)
            else:
                value, why = _CHECKS[name](data[name], fallback)
                if why:
                    bad(name, why, getattr(fallback, name))
                else:
                    setattr(settings, name, value)
        return settings


def _is_int(value) -> bool:
    return type(value) is int                        # not bool, not float


def _flag(value, fallback):
    if isinstance(value, bool) or (_is_int(value) and value in (0, 1)):
        return bool(value), None
    return None, f"{value!r} is not true/false or 0/1"


def _int_in(lo: int, hi: int):
    def check(value, fallback):
        if _is_int(value) and lo <= value <= hi:
            return value, None
        return None, f"{value!r} is not an integer {lo}-{hi}"
    return check


def _ipr(value, fallback):
    rates = fallback.ipr_rates
    if _is_int(value) and (value == 0 or value in rates or (not rates and value > 0)):
        return value, None
    return None, f"{value!r} is not 0 or a supported baud rate"


def _ifc(value, fallback):
    # AT+IFC takes 0 (none) or 2 (RTS/CTS) for each direction.
    if isinstance(value, list) and len(value) == 2 and all(_is_int(v) and v in (0, 2) for v in value):
        return tuple(value), None
    return None, f"{value!r} is not a pair of 0 or 2"


def _icf(value, fallback):
    # AT+ICF takes <format> 3 only (8 data, no parity, 1 stop: what a pty carries) and a
    # <parity> 0-3 (kept, ignored with format 3).
    if (isinstance(value, list) and len(value) == 2 and all(_is_int(v) for v in value)
            and value[0] == 3 and 0 <= value[1] <= 3):
        return tuple(value), None
    return None, f"{value!r} is not [3, <parity 0-3>]"


# What the AT command that sets the key accepts (AT&C 0-1, AT&D 0-2, AT+CMEE 0-2).
_CHECKS = {"echo": _flag, "verbose": _flag, "quiet": _flag, "cmee": _int_in(0, 2),
           "ipr": _ipr, "ifc": _ifc, "icf": _icf, "dcd": _int_in(0, 1), "dtr": _int_in(0, 2),
           "x": _int_in(0, 4)}
# Keys newer than the first settings files: a file without one is an older AT&W's, not a
# hand-edited one (no warning).
_ADDED_LATER = frozenset({"icf", "x"})


def _load_sreg(saved, defaults: dict[int, int], path, bad) -> dict[int, int]:
    """S registers from the file, each in the range ATSn= accepts (S3/S5 0-127) or its
    default (S7's factory 0 is below ATS7's 1-255, and AT&W saves it)."""
    sreg = dict(defaults)
    if not isinstance(saved, dict):
        bad("sreg", f"{saved!r} is not a table of registers", defaults)
        return sreg
    numbers = {}
    for key in saved:
        number = int(key) if key.isascii() and key.isdecimal() else None
        if number not in SREG_RANGES or str(number) != key:
            log.warning("saved settings %s: key S%s: unknown register, ignored", path, key)
        else:
            numbers[number] = key
    for number in sorted(defaults):
        name = f"S{number}"
        lo, hi = SREG_RANGES.get(number, (0, 255))
        if number not in numbers:
            bad(name, "missing", defaults[number])
            continue
        value = saved[numbers[number]]
        if _is_int(value) and (lo <= value <= hi or value == defaults[number]):
            sreg[number] = value
        else:
            bad(name, f"{value!r} is not an integer {lo}-{hi}", defaults[number])
    return sreg
