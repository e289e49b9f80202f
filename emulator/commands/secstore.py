"""ML302 certificate slots: AT+QSECWRITE / QSECREAD / QSECDEL (ML302 SSL AT
manual sections 2.2-2.4) on top of emulator.storage.secstore.SecStore.

The test forms reproduce the manual byte for byte, including its inconsistent
spacing: "+QSECWRITE:(0~2)" and "+QSECDEL:(0~2)" have no space after the
colon, "+QSECREAD: (0~2)" has one.

The manual only says "ERROR/+CME ERROR: <err>" for failures; the codes chosen
here (3GPP TS 27.007 numbers, printed per AT+CMEE) are, for docs/behaviour.md:

    <crtflag> missing or not 0-2                      50  incorrect parameters
    QSECWRITE to a filled slot (checked before "> ")   3   operation not allowed
    QSECWRITE data over MAX_CERT bytes                 20  memory full
    QSECWRITE with no data (Ctrl+Z at once)            50  incorrect parameters
    QSECREAD of an empty slot                          22  not found
    host storage failure                               23  memory failure

ESC during QSECWRITE cancels: nothing is stored and the answer is OK (the
host asked for the cancel, so it is not an error).  QSECDEL of an empty slot
answers OK too: hosts commonly delete before writing, on first boot as well.
The "> " prompt is framed like an information line: "\\r\\n> " in ATV1,
"> " in ATV0 (Prompt.DATA).  The store's refusals carry these codes themselves
(SecStoreError.cme): handlers let them through and the interpreter answers them.
A slot whose stored bytes no longer match their checksum (the
slot file was damaged or tampered with) reads as "+QSECREAD: 0,<checksum>".
"""
from __future__ import annotations

from emulator.at.args import Args
from emulator.at.parser import WRITE
from emulator.at.registry import command
from emulator.at.responses import Cme, CommandError, DataRequest, Prompt, Response, ok
from emulator.storage.checksum import format_checksum
from emulator.storage.secstore import SlotEmpty

MAX_CERT = 16384          # bytes; well above any PEM certificate or key chain
ERR_NOT_ALLOWED = 3
ERR_MEMORY_FULL = 20
ERR_PARAMETERS = 50


def _slot(cmd) -> int:
    args = Args(cmd, error=Cme(ERR_PARAMETERS), at_most=1)
    return args.int(0, 0, 2)


@command("+QSECWRITE", WRITE, test="+QSECWRITE:(0~2)")
def qsecwrite_write(modem, cmd):
    slot = _slot(cmd)
    store = modem.secstore
    if store.is_filled(slot):
        raise CommandError(Cme(ERR_NOT_ALLOWED), f"slot {slot} is filled: AT+QSECDEL first")

    def on_done(data: bytes, reason: str) -> Response:
        if reason == "cancel":
            return ok()
        if reason == "overflow":
            raise CommandError(Cme(ERR_MEMORY_FULL), f"more than {MAX_CERT} bytes")
        if not data:
            raise CommandError(Cme(ERR_PARAMETERS), "no data")
        size, checksum = store.write(slot, data)     # SlotOccupied 3, SecStoreError 23
        return ok(f"+QSECWRITE: {size},{format_checksum(checksum)}")

    return Response([], None, data=DataRequest(on_done, prompt=Prompt.DATA, length=None,
                                               max_length=MAX_CERT, escape_cancels=True))


@command("+QSECREAD", WRITE, test="+QSECREAD: (0~2)")
def qsecread_write(modem, cmd):
    good, checksum = modem.secstore.status(_slot(cmd))   # SlotEmpty: 22
    return ok(f"+QSECREAD: {good},{format_checksum(checksum)}")


@command("+QSECDEL", WRITE, test="+QSECDEL:(0~2)")
def qsecdel_write(modem, cmd):
    slot = _slot(cmd)
    try:
        modem.secstore.delete(slot)                      # a host failure: 23
    except SlotEmpty:
        pass                      # already empty: the goal of the command holds
    return ok()
