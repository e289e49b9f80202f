"""Port settings a host changes with V.250 commands (ATE, ATV, ATQ, S registers,
AT+CMEE, AT+IPR, AT+IFC, AT&C, AT&D).  AT&F restores the profile's factory
values, AT&W saves the current ones (to the state dir), ATZ restores the saved."""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

log = logging.getLogger("emulator.settings")


@dataclass
class Settings:
    echo: bool = True
    verbose: bool = True
    quiet: bool = False
    cmee: int = 1
    ipr: int = 115200
    ifc: tuple[int, int] = (0, 0)
    dcd: int = 1          # AT&C
    dtr: int = 2          # AT&D
    sreg: dict[int, int] = field(default_factory=lambda: {0: 0, 3: 13, 4: 10, 5: 8, 6: 2,
                                                          7: 0, 8: 2, 10: 15, 12: 50})

    @classmethod
    def factory(cls, profile) -> "Settings":
        return cls(echo=profile["defaults.echo"], verbose=profile["defaults.verbose"],
                   cmee=profile["defaults.cmee"], ipr=profile["defaults.ipr"])

    def copy(self) -> "Settings":
        return Settings(**{**asdict(self), "sreg": dict(self.sreg)})

    # AT&W / ATZ persistence ------------------------------------------------
    def save(self, path: Path | None) -> None:
        if path is None:
            return
        data = asdict(self)
        data["sreg"] = {str(k): v for k, v in self.sreg.items()}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path | None, fallback: "Settings") -> "Settings":
        if path is None or not path.exists():
            return fallback.copy()
        try:
            data = json.loads(path.read_text())
            data["sreg"] = {int(k): int(v) for k, v in data["sreg"].items()}
            data["ifc"] = tuple(data["ifc"])
            return cls(**data)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable saved settings %s: %s", path, exc)
            return fallback.copy()
