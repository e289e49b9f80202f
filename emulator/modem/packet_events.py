"""What one modem's packet domain did, as the host may learn it afterwards: the cause
AT+CEER reports and the +CGEV URCs AT+CGEREP enables (3GPP TS 27.007 §10.1.19, §6.10).

The places where things happen report them here, whoever caused them:

* a PDP context goes down (Modem.deactivate_pdp): by the host (AT+QIDEACT, AT+CGACT=0, a
  detach, the radio off) -> `+CGEV: ME PDN DEACT <cid>`, or by the network (the control
  API's pdp_deact, a lost registration) -> `+CGEV: NW PDN DEACT <cid>`;
* a context comes up at the host's request (AT+QIACT, AT+CGACT=1) -> `+CGEV: ME PDN ACT <cid>`;
* the packet domain is detached (Registration): by the host (AT+CGATT=0, AT+COPS=2,
  AT+CFUN=0/4) -> `+CGEV: ME DETACH`, by the network -> `+CGEV: NW DETACH`;
* an activation or an attach the module refuses (radio off, no network): AT+CEER's cause.

The URC wording is the profile's [cgev] table and AT+CEER's texts its [ceer] table (a
profile without them reports nothing).  A restart forgets everything: AT+CGEREP goes back
to 0,0 and AT+CEER to "no cause".
"""
from __future__ import annotations

from collections import deque

# +CGEV codes the module keeps while <mode> is 0 (27.007: "if MT result code buffer is full,
# the oldest ones can be discarded"); AT+CGEREP=1|2,1 writes them after its OK.
BUFFER_MAX = 32

# AT+CEER causes: the keys of the profile's [ceer] table.
NO_CAUSE, RADIO_OFF, NO_SERVICE, DEACTIVATED, LINK_LOST = (
    "none", "radio_off", "no_service", "deactivated", "link_lost")


def packet_events(modem) -> "PacketEvents":
    return modem.feature("packet_events", PacketEvents)


class PacketEvents:
    def __init__(self, modem) -> None:
        self.modem = modem
        self._restart()
        modem.on("reset", self._restart)

    def _restart(self) -> None:
        self.mode = 0                       # AT+CGEREP <mode>: 0 buffer in the MT, 1 discard
        self.bfr = 0                        # while the link is reserved, 2 buffer it; <bfr>
        self.buffered: deque[str] = deque(maxlen=BUFFER_MAX)
        self.cause = NO_CAUSE

    # -- what happened --------------------------------------------------------------
    def refused(self, cause: str) -> None:
        """An activation or attach that failed: RADIO_OFF or NO_SERVICE."""
        self.cause = cause

    def activated(self, cid: int) -> None:
        self._report("me_pdn_act", cid)

    def deactivated(self, cid: int, by: str) -> None:
        """Context `cid`, active until now, goes down: by "host" or "network".  A network
        deactivation while the module stays registered is the network's (regular
        deactivation); one that comes with the registration lost is the link's."""
        if by == "network":
            from emulator.modem.registration import registration
            self.cause = DEACTIVATED if registration(self.modem).registered() else LINK_LOST
            self._report("nw_pdn_deact", cid)
        else:
            self.cause = DEACTIVATED
            self._report("me_pdn_deact", cid)

    def detached(self, by: str) -> None:
        self._report("nw_detach" if by == "network" else "me_detach")

    # -- what the host asks ---------------------------------------------------------
    def ceer_text(self) -> str:
        return self.modem.profile[f"ceer.{self.cause}"]

    def set_reporting(self, mode: int, bfr: int) -> list[str]:
        """AT+CGEREP=<mode>,<bfr>: the codes kept while <mode> was 0 that go to the host after
        the OK (<bfr> 1), when <mode> 1 or 2 is entered; <bfr> 0 clears them."""
        self.mode, self.bfr = mode, bfr
        if mode == 0:
            return []
        kept = list(self.buffered) if bfr == 1 else []
        self.buffered.clear()
        return kept

    def _report(self, key: str, cid: int | None = None) -> None:
        template = self.modem.profile.get(f"cgev.{key}")
        if template is None:                # (a profile without AT+CGEREP)
            return
        line = template.format(cid=cid)
        if self.mode == 0:
            self.buffered.append(line)
        elif self.mode == 1 and self.modem.interpreter.online_link is not None:
            self.modem.trace("cgev_discarded", line=line)     # the link is reserved: dropped
        else:
            # <mode> 2 (or 1 with the port in command state): written now, or when the port
            # is free again -- the interpreter holds URCs while a command or online data
            # mode has the port, which is what <mode> 2 asks for.
            self.modem.urc(line)
