"""Status commands host drivers use to find out why the network failed them and what
cell they are on: AT+CEER (the last packet-domain failure or deactivation), AT+CGEREP (the
+CGEV URCs of packet-domain events) and, on the EC2x, AT+QENG="servingcell" /
"neighbourcell" (the engineering-mode cell report).

What AT+CEER and the +CGEV URCs report is collected where it happens
(emulator/modem/packet_events.py); the serving cell's figures are the profile's [cell],
the same AT+QCSQ shows, and its registration state is emulator/modem/registration.py's.
Decisions where the manuals at hand are silent: docs/behaviour.md, "Status commands"."""
from __future__ import annotations

import math

from emulator.at.args import Args
from emulator.at.parser import EXEC, READ, WRITE
from emulator.at.registry import command
from emulator.at.responses import CommandError, Response, ok
from emulator.commands.device import rssi_dbm
from emulator.modem.packet_events import packet_events
from emulator.modem.registration import REGISTERED, registration

DENIED = 3                      # +CREG <stat> 3: registration denied (camped, limited service)


# -- AT+CEER (27.007 §6.10) ----------------------------------------------------------------
@command("+CEER", EXEC)          # AT+CEER=? answers a bare OK (the table's default)
def ceer(modem, cmd):
    text = packet_events(modem).ceer_text()
    return ok("+CEER: " + modem.profile["ceer.report"].format(text=text))


# -- AT+CGEREP (27.007 §10.1.19) -----------------------------------------------------------
@command("+CGEREP", WRITE, test="+CGEREP: (0-2),(0,1)")
def cgerep_write(modem, cmd):
    """AT+CGEREP=<mode>[,<bfr>]: 0 the +CGEV codes stay in the module, 1 they are written
    (dropped while online data mode holds the port), 2 written (held while it does).  On
    entering 1 or 2, <bfr> 1 writes the codes kept meanwhile after the OK, 0 drops them."""
    args = Args(cmd, at_most=2)
    mode = args.int(0, 0, 2)
    bfr = args.int(1, 0, 1, default=0)
    return Response([], "OK", after=packet_events(modem).set_reporting(mode, bfr))


@command("+CGEREP", READ)
def cgerep_read(modem, cmd):
    events = packet_events(modem)
    return ok(f"+CGEREP: {events.mode},{events.bfr}")


# -- AT+QENG (EC25&EC21 AT Commands Manual, engineering mode) ---------------------------------
CELL_TYPES = ("servingcell", "neighbourcell")


@command("+QENG", WRITE, test="+QENG: (" + ",".join(f'"{t}"' for t in CELL_TYPES) + ")")
def qeng(modem, cmd):
    cell_type = Args(cmd, at_most=1).str(0, max_len=16).lower()
    if cell_type not in CELL_TYPES:
        raise CommandError("ERROR", f"AT+QENG: {cell_type!r} is not one of {', '.join(CELL_TYPES)}")
    state = _cell_state(modem)
    if cell_type == "servingcell":
        if state == "SEARCH":
            return ok('+QENG: "servingcell","SEARCH"')
        return ok(_serving_line(modem, state))
    if state == "SEARCH":
        return ok()                     # no cell: nothing measured around it
    return ok(*("+QENG: " + line for line in modem.profile["cell.neighbours"]))


def _cell_state(modem) -> str:
    """<state>: NOCONN registered in the packet domain (idle: the emulator has no RRC
    connection to report), LIMSRV camped on the cell without that registration (denied,
    or the host detached), SEARCH no cell (the radio off, deregistered, not registered)."""
    reg = registration(modem)
    if reg.stat("+CEREG") in REGISTERED:
        return "NOCONN"
    if reg.registered() or reg.radio_stat() == DENIED:
        return "LIMSRV"
    return "SEARCH"


def _serving_line(modem, state: str) -> str:
    """+QENG: "servingcell",<state>,"LTE",<is_tdd>,<MCC>,<MNC>,<cellID>,<PCID>,<earfcn>,
    <freq_band_ind>,<UL_bandwidth>,<DL_bandwidth>,<TAC>,<RSRP>,<RSRQ>,<RSSI>,<SINR>,<srxlev>:
    the MNC as the PLMN has it (2 or 3 digits), the cell id and TAC in hex without leading
    zeros, SINR in whole dB."""
    p = modem.profile
    reg = registration(modem)
    plmn = reg.operator(2)
    fields = [f'"{p["cell.duplex"]}"', plmn[:3], plmn[3:], f"{int(reg.cell(), 16):X}",
              p["cell.pci"], p["network.channel"], p["cell.band"], p["cell.ul_bandwidth"],
              p["cell.dl_bandwidth"], f"{int(reg.area(), 16):X}", p["cell.rsrp"], p["cell.rsrq"],
              rssi_dbm(modem), math.floor(p["cell.sinr"] + 0.5), p["cell.srxlev"]]
    return f'+QENG: "servingcell","{state}","LTE",' + ",".join(map(str, fields))
