"""EC2x file commands: AT+QFUPL / QFLST / QFDEL / QFDWL / QFLDS (Quectel
LTE Standard FILE application note) on top of emulator.storage.vfs.FileStore.

Behaviour chosen where the note is silent or ambiguous (docs/behaviour.md):

* AT+QFUPL="<name>"[,<file_size>[,<timeout>[,<ackmode>]]]: defaults 10240
  bytes, 5 s, ackmode 0 (the note's parameter table).  The name, the drive's
  free space and the file count are checked BEFORE "CONNECT", so a refused
  upload never swallows the host's data as a command line.  An existing file
  is refused with +CME ERROR: 407 (file already existed): the host deletes
  first, as on the module.  After CONNECT exactly <file_size> bytes are data:
  Ctrl+Z, ESC, CR, LF, NUL are all file content.  "+++" is not an escape here
  (it is data too).
* <timeout> is an inactivity timeout ("the time waiting for data to be
  inputted"): the upload ends once no byte has arrived for <timeout> seconds
  (a timer on the modem's clock, restarted by every byte).  What arrived until
  then is kept, as the note says of an interrupted upload ("the data previously
  uploaded will be preserved"): the file is written and the answer is
  "+QFUPL: <upload_size>,<checksum>" with the real size.  If nothing at all
  arrived (not covered by the note): +CME ERROR: 421 (time out), no file.
* ackmode 1: after every 1024 bytes the module writes "A" (no CR LF) and the
  host sends the next block; no "A" follows the last byte (+QFUPL answers).
* CONNECT is framed like a result code: "\\r\\nCONNECT\\r\\n" in ATV1, "1\\r" in
  ATV0, nothing with ATQ1.  The data are never echoed, even with ATE1: CONNECT
  is data mode, and V.250 echo belongs to command state.
* Bad numeric parameters answer +CME ERROR: 400 (invalid input value); name
  errors come from FileStore (406 invalid name, 405 not found, 403 drive full).
* AT+QFLST / AT+QFLST="<pattern>": '+QFLST: "<name>",<size>' per file, RAM
  files as "RAM:<name>"; no match is a bare OK.
* AT+QFDEL="<name>" deletes one file (405 if missing); a pattern with "*" or
  "?" ("*" = all UFS, "RAM:*" = all RAM) deletes every match, zero included.
* AT+QFDWL: CONNECT, the bytes, CR LF, "+QFDWL: <size>,<checksum>", OK.
* Test forms as a real Quectel module prints them (a published BG770A UART
  capture; the BG96 FILE manual prints the same QFUPL/QFDWL forms; the EC2x
  note itself could only be consulted through search excerpts):
  QFUPL/QFDWL/QFDEL print their syntax with the placeholders literally,
  QFLST=? and QFLDS=? answer a bare OK.
"""
from __future__ import annotations

from emulator.at.args import Args
from emulator.at.parser import EXEC, WRITE
from emulator.at.registry import command
from emulator.at.responses import CONNECT, Cme, CommandError, DataRequest, Prompt, Raw, Response, ok
from emulator.storage.checksum import format_checksum, xor16

# A FileError (emulator.storage.vfs) carries its +CME code: handlers let it through
# and the interpreter answers it.

DEFAULT_SIZE = 10240
DEFAULT_TIMEOUT = 5
ACK_BLOCK = 1024
ERR_INVALID_INPUT = 400
ERR_TIMEOUT = 421


def _args(cmd) -> Args:
    return Args(cmd, error=Cme(ERR_INVALID_INPUT))


@command("+QFUPL", WRITE, test="+QFUPL: <filename>[,(1-<freesize>)[,(1-65535)[,(0,1)]]]")
def qfupl_write(modem, cmd):
    args = _args(cmd)
    args.at_most(4)
    name = args.str(0, max_len=1000)
    size = args.int(1, 1, 2**31 - 1, default=DEFAULT_SIZE)
    timeout = args.int(2, 1, 65535, default=DEFAULT_TIMEOUT)
    ackmode = bool(args.int(3, 0, 1, default=0))
    modem.files.check_writable(name, size, overwrite=False)     # refused before CONNECT

    def on_done(data: bytes, reason: str) -> Response:          # "done" or "timeout"
        if not data:
            raise CommandError(Cme(ERR_TIMEOUT), f"AT+QFUPL {name}: no data")
        modem.files.write(name, data, overwrite=False)
        return ok(f"+QFUPL: {len(data)},{format_checksum(xor16(data))}")

    return Response([], None, data=DataRequest(
        on_done, prompt=Prompt.CONNECT, length=size, escape_cancels=False,
        idle_timeout=timeout, echo=False, ack_block=ACK_BLOCK if ackmode else None))


# AT+QFLST=? and AT+QFLDS=? answer a bare OK: the table's default for a command
# without a declared test form.

def _list(modem, pattern: str | None) -> Response:
    return ok(*(f'+QFLST: "{name}",{size}' for name, size in modem.files.list(pattern)))


@command("+QFLST", EXEC)
def qflst_exec(modem, cmd):
    return _list(modem, None)


@command("+QFLST", WRITE)
def qflst_write(modem, cmd):
    args = _args(cmd)
    args.at_most(1)
    return _list(modem, args.str(0, max_len=1000))


@command("+QFDEL", WRITE, test="+QFDEL: <filename>")
def qfdel_write(modem, cmd):
    args = _args(cmd)
    args.at_most(1)
    pattern = args.str(0, max_len=1000)
    if "*" in pattern or "?" in pattern:
        modem.files.delete_matching(pattern)
    else:
        modem.files.delete(pattern)
    return ok()


@command("+QFDWL", WRITE, test="+QFDWL: <filename>")
def qfdwl_write(modem, cmd):
    args = _args(cmd)
    args.at_most(1)
    data = modem.files.read(args.str(0, max_len=1000))
    # Framed by the interpreter: "\r\nCONNECT\r\n<data>\r\n+QFDWL: ...\r\n" in ATV1,
    # "1\r<data>\r\n+QFDWL: ...\r\n" in ATV0 (CONNECT glued to the data), no CONNECT in ATQ1.
    # Paced: a file larger than the output bound (serial.output_backlog) would be cut if
    # written at once; it goes out as the host reads it, as through a UART.
    return Response([CONNECT, Raw(data), f"+QFDWL: {len(data)},{format_checksum(xor16(data))}"], paced=True)


@command("+QFLDS", WRITE)
def qflds_write(modem, cmd):
    args = _args(cmd)
    args.at_most(1)
    free, total = modem.files.space(args.str(0, max_len=16))
    return ok(f"+QFLDS: {free},{total}")


@command("+QFLDS", EXEC)
def qflds_exec(modem, cmd):
    used, count = modem.files.usage("UFS")
    return ok(f"+QFLDS: {used},{count}")
