"""PDP contexts of one modem: configuration (AT+QICSGP / AT+CGDCONT) and
activation state, with addresses handed out from the profile's pool."""
from __future__ import annotations

import ipaddress
import json
import socket
from dataclasses import dataclass

from emulator.logsafe import get_logger
from emulator.storage.atomic_file import atomic_write, read_plain

log = get_logger("emulator.pdp")


@dataclass
class PdpContext:
    cid: int
    type: int = 1             # 1 IPv4, 2 IPv6, 3 IPv4v6 (Quectel numbering)
    apn: str = ""
    user: str = ""
    password: str = ""
    auth: int = 0
    active: bool = False
    address: str | None = None

    @property
    def name_family(self) -> int:
        """The address family a name resolves to on this context: A records only on an "IP"
        (IPv4) context, any on the others -- AT+QIDNSGIP, AT+QIOPEN and AT+QSSLOPEN alike."""
        return socket.AF_INET if self.type == 1 else socket.AF_UNSPEC


# The DNS servers the network hands out with an address (AT+QIDNSCFG, AT+CGCONTRDP) when the
# profile has no pdp.dns: a Quectel driver's comment shows +QIDNSCFG: 1,"123.66.165.1","123.66.165.2".
NETWORK_DNS = ("123.66.165.1", "123.66.165.2")


class PdpTable:
    def __init__(self, profile) -> None:
        self.first = profile["pdp.first_id"]
        self.last = profile["pdp.last_id"]
        self._pool_start = ipaddress.IPv4Address(profile["pdp.address_pool"])
        self._default_apn = profile["pdp.default_apn"]
        self.network_dns: tuple[str, str] = tuple(profile.get("pdp.dns") or NETWORK_DNS)
        self._contexts: dict[int, PdpContext] = {}

    def get(self, cid: int) -> PdpContext:
        if cid not in self._contexts:
            self._contexts[cid] = PdpContext(cid, apn=self._default_apn)
        return self._contexts[cid]

    def find(self, cid: int) -> PdpContext | None:
        """The context if it is defined (never defines it, unlike get())."""
        return self._contexts.get(cid)

    def defined(self) -> list[PdpContext]:
        return [self._contexts[c] for c in sorted(self._contexts)]

    def active(self) -> list[PdpContext]:
        return [c for c in self.defined() if c.active]

    def is_active(self, cid: int) -> bool:
        ctx = self._contexts.get(cid)
        return bool(ctx and ctx.active)

    def activate(self, cid: int) -> PdpContext:
        ctx = self.get(cid)
        if not ctx.active:
            used = {c.address for c in self._contexts.values() if c.active}
            n = 0
            while str(self._pool_start + n) in used:
                n += 1
            ctx.address = str(self._pool_start + n)
            ctx.active = True
        return ctx

    def deactivate(self, cid: int) -> None:
        ctx = self._contexts.get(cid)
        if ctx:
            ctx.active = False
            ctx.address = None

    def undefine(self, cid: int) -> bool:
        """AT+CGDCONT=<cid> (27.007 §10.1.1: the context's values become undefined); False
        when the context is active (it must be deactivated first)."""
        ctx = self._contexts.get(cid)
        if ctx is not None and ctx.active:
            return False
        self._contexts.pop(cid, None)
        return True

    def deactivate_all(self) -> list[int]:
        cids = [c.cid for c in self.active()]
        for cid in cids:
            self.deactivate(cid)
        return cids


class DataCounter:
    """AT+QGDCNT: bytes the module's sockets sent and received on the network (what their
    connections carried: TLS records, not the host's plaintext; no IP/TCP headers).  Kept
    across a restart only as last saved (AT+QGDCNT=1): <state_dir>/qgdcnt.json."""

    SAVED_KEYS = ("sent", "received")                  # what qgdcnt.json holds

    def __init__(self, modem=None) -> None:
        self.sent = 0
        self.received = 0
        state_dir = getattr(modem, "state_dir", None)
        self._path = state_dir / "qgdcnt.json" if state_dir is not None else None
        self._load()
        if modem is not None:
            modem.on("reset", self._load)

    def _load(self) -> None:
        self.sent = self.received = 0
        if self._path is None or not self._path.exists():
            return
        try:
            data = json.loads(read_plain(self._path))
            sent, received = data["sent"], data["received"]
        except Exception as exc:          # unreadable, not JSON, too deep, not a dict: none saved
            log.warning("%s: not readable data counters, ignored (%s)", self._path, exc)
            return
        if all(type(v) is int and v >= 0 for v in (sent, received)):    # (not a bool, a float)
            self.sent, self.received = sent, received

    def saved_form(self) -> dict:
        """What qgdcnt.json holds for these counters."""
        return {key: getattr(self, key) for key in self.SAVED_KEYS}

    def save(self) -> bool:
        if self._path is None:
            return True
        try:
            atomic_write(self._path, json.dumps(self.saved_form()).encode())
        except OSError:
            return False
        return True


def data_counter(modem) -> DataCounter:
    return modem.feature("data_counter", DataCounter)
