"""Network registration and packet-domain attach of one modem (AT+CREG/CGREG/CEREG,
AT+CGATT), and the URCs a registration change reports.

What the network says (the control API's "register" op, a scenario step) and what the
host asks (AT+CGATT, AT+CFUN) meet here, so every path behaves the same way:

* stat 1 (home) or 5 (roaming): registered; the packet domain is attached unless the
  host detached it with AT+CGATT=0.
* any other stat (0 not registered, 2 searching, 3 denied, 4 unknown): the network
  dropped the module: every active PDP context is lost as a network deactivation
  (EC2x `+QIURC: "pdpdeact",<cid>`, then each socket's "closed" URC).
* AT+CGATT=0: the host detaches: every PDP context is deactivated as by AT+QIDEACT
  (sockets report "closed", no "pdpdeact": the host asked for it); AT+CGREG/AT+CEREG
  then read stat 0 while AT+CREG (circuit switched) keeps its stat.
* AT+CFUN=0/4: stat 0 everywhere until AT+CFUN=1.

A change of the stat each command reports is sent as its URC when the host enabled it
(`AT+CEREG=1`: `+CEREG: <stat>`; `=2` when registered: `+CEREG: <stat>,"<tac>","<ci>",<act>`).
The packet domain detached (by the host or by the network) is reported too, as
`+CGEV: ME DETACH` / `NW DETACH` when AT+CGEREP asks (emulator/modem/packet_events.py).
"""
from __future__ import annotations

from emulator.modem.packet_events import packet_events

NAMES = ("+CREG", "+CGREG", "+CEREG")
REGISTERED = (1, 5)
# Location fields when the profile has no [cell] (the serving cell AT+QENG reports): fixed
# values (docs/behaviour.md).
AREA, CELL = "D5D5", "8A21B03"


def registration(modem) -> "Registration":
    return modem.feature("registration", Registration)


class Registration:
    def __init__(self, modem) -> None:
        self.modem = modem
        self.network_stat: int | None = None     # the network's word (control API); None: the profile's
        self.detached = False                    # AT+CGATT=0 until AT+CGATT=1 / a reboot
        self.cops_mode = 0                       # AT+COPS <mode>: 0 automatic, 1 manual, 2 deregistered, 4
        self.cops_format = 0                     # AT+COPS=3,<format>: 0 long, 1 short, 2 numeric
        self._reported = {name: self.stat(name) for name in NAMES}
        self._was_attached = self.attached()     # what a detach is told from (note_attach)
        modem.on("reset", self._reboot)
        modem.on("sim_ready", self._sim_ready)

    # -- what the commands read ---------------------------------------------------
    def radio_stat(self, cfun: int | None = None) -> int:
        if (self.modem.cfun if cfun is None else cfun) != 1 or self.cops_mode == 2:
            return 0
        if not self.modem.sim_ready:
            return 2                 # a restart's SIM not read yet (until +CPIN: READY): searching
        return self.modem.profile["network.reg_stat"] if self.network_stat is None else self.network_stat

    def registered(self) -> bool:
        return self.radio_stat() in REGISTERED

    def attached(self) -> bool:
        """AT+CGATT?: the packet domain is attached."""
        return self.registered() and not self.detached

    def stat(self, name: str, cfun: int | None = None) -> int:
        stat = self.radio_stat(cfun)
        if name != "+CREG" and stat in REGISTERED and self.detached:
            return 0                             # PS detached: not registered for packet data
        return stat

    def line(self, name: str, n: int, urc: bool = False) -> str:
        """The read answer (`+CEREG: <n>,<stat>[,...]`) or, urc=True, the URC (no <n>)."""
        stat = self.stat(name)
        head = f"{name}: {stat}" if urc else f"{name}: {n},{stat}"
        if n == 2 and stat in REGISTERED:
            return f'{head},"{self.area()}","{self.cell()}",{self.modem.profile["network.act"]}'
        return head

    def area(self) -> str:
        """The serving cell's tracking (location) area code, hex: the profile's cell.tac."""
        return self.modem.profile.get("cell.tac", AREA)

    def cell(self) -> str:
        """The serving cell's id, hex: the profile's cell.id."""
        return self.modem.profile.get("cell.id", CELL)

    # -- changes --------------------------------------------------------------------
    def set_network(self, stat: int) -> None:
        """The network registers (1, 5) or drops (0, 2, 3, 4) the module."""
        was_registered = self.registered()
        self.network_stat = stat
        self._changed(was_registered, network=True)

    def select(self, mode: int) -> None:
        """AT+COPS=<mode>: 2 deregisters (the contexts go, as the host asked), 0/1/4 register
        again."""
        was_registered = self.registered()
        self.cops_mode = mode
        self._changed(was_registered, network=False)

    def _changed(self, was_registered: bool, network: bool) -> None:
        """After a change of what registration depends on: the URCs, and the PDP contexts
        gone if it is lost (network: the network's doing, reported as such)."""
        self.refresh()
        if was_registered and not self.registered():
            self._lose_contexts(network=network)
        self.note_attach("network" if network else "host")

    def operator(self, fmt: int | None = None) -> str:
        """The network's name in an AT+COPS <format>: 0 long, 1 short alphanumeric (the
        profile's network.operator), 2 numeric (MCC MNC: the profile's network.plmn, else the
        first five digits of the IMSI -- a 2-digit MNC; a 3-digit one needs network.plmn)."""
        fmt = self.cops_format if fmt is None else fmt
        if fmt == 2:
            profile = self.modem.profile
            return profile.get("network.plmn") or profile["identity.imsi"][:5]
        return self.modem.profile["network.operator"]

    def attach(self, on: bool) -> None:
        """AT+CGATT=<0|1> (the caller checked that attaching is possible)."""
        self.detached = not on
        self.refresh()
        if not on:
            self._lose_contexts(network=False)
        self.note_attach("host")

    def note_attach(self, by: str) -> None:
        """After a change that may have detached the packet domain (its contexts already
        gone): a detach is reported, as the host's ("host") or the network's doing."""
        attached = self.attached()
        if self._was_attached and not attached:
            packet_events(self.modem).detached(by)
        self._was_attached = attached

    def refresh(self) -> None:
        """Report every registration stat that changed, as its URC if the host asked."""
        for name in NAMES:
            stat = self.stat(name)
            if stat != self._reported[name]:
                self._reported[name] = stat
                self.modem.trace("registration", command=name, stat=stat)
                n = self.modem.reg_urc.get(name, 0)
                if n:
                    self.modem.urc(self.line(name, n, urc=True))

    def _sim_ready(self) -> None:
        """A restart's +CPIN: READY: registered (and attached) now -- reported, and what a
        later detach is told from."""
        self.refresh()
        self._was_attached = self.attached()

    def _lose_contexts(self, network: bool) -> None:
        for ctx in self.modem.pdp.active():     # sockets on it report "closed"
            if network:
                self.modem.network_deactivated_pdp(ctx.cid)
            else:
                self.modem.deactivate_pdp(ctx.cid)

    def _reboot(self) -> None:
        """AT+CFUN=1,1: attached again after the restart (which ends at AT+CFUN 1);
        nothing is reported."""
        self.detached = False
        self.cops_mode = self.cops_format = 0
        self._reported = {name: self.stat(name, cfun=1) for name in NAMES}
        self._was_attached = self.radio_stat(cfun=1) in REGISTERED     # (False until the SIM is up)
