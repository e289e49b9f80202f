"""The modem's real-time clock (AT+CCLK).

It starts at the computer's time and, once set, runs on from the value set (an
offset against the system clock).  The TLS engine checks certificate validity
against now(), not against the computer's clock.
"""
from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone

_CCLK = re.compile(r"^(\d\d)/(\d\d)/(\d\d),(\d\d):(\d\d):(\d\d)([+-])(\d\d)$")


class ModemClock:
    def __init__(self, timezone_quarters: int = 0, now: callable = time.time) -> None:
        self._system_now = now
        self._offset = 0.0                  # modem UTC - system UTC, seconds
        self.quarters = timezone_quarters   # local time zone in quarters of an hour

    def now(self) -> datetime:
        """Aware UTC datetime of the modem clock."""
        return datetime.fromtimestamp(self._system_now() + self._offset, timezone.utc)

    def set_local(self, text: str) -> bool:
        """Set from AT+CCLK's "yy/MM/dd,hh:mm:ss±zz"; False when malformed."""
        m = _CCLK.match(text)
        if not m:
            return False
        yy, mo, dd, hh, mi, ss, sign, zz = m.groups()
        quarters = int(zz) * (1 if sign == "+" else -1)
        if not -96 <= quarters <= 96:        # 27.007: -96..+96
            return False
        try:
            # As UTC, then the zone's offset taken off by hand: Python's timezone() refuses
            # +-24 h, which 27.007's +-96 quarters reach.
            local = datetime(2000 + int(yy), int(mo), int(dd), int(hh), int(mi), int(ss),
                             tzinfo=timezone.utc)
        except ValueError:
            return False
        self._offset = local.timestamp() - 900 * quarters - self._system_now()
        self.quarters = quarters
        return True

    def adjust(self, seconds: float) -> None:
        """Move the clock by `seconds` (AT+QNTP with <autosettime> 1: the offset SNTP
        measured); the time zone stays."""
        self._offset += seconds

    def format_local(self) -> str:
        local = (self.now() + timedelta(minutes=15 * self.quarters)).replace(tzinfo=None)
        sign = "+" if self.quarters >= 0 else "-"
        return local.strftime("%y/%m/%d,%H:%M:%S") + f"{sign}{abs(self.quarters):02d}"
