"""EC2x file commands: AT+QFUPL / QFLST / QFDEL / QFDWL / QFLDS / QFMOV (Quectel
LTE Standard FILE application note) on top of emulator.storage.vfs.FileStore, and the
open-file commands AT+QFOPEN / QFREAD / QFWRITE / QFSEEK / QFPOSITION / QFTUCAT / QFCLOSE
on emulator.storage.handles (their choices: docs/behaviour.md, "Files").

Behaviour chosen where the note is silent or ambiguous (docs/behaviour.md):

* AT+QFUPL="<name>"[,<file_size>[,<timeout>[,<ackmode>]]]: defaults 10240
  bytes, 5 s, ackmode 0 (the note's parameter table).  The name, the drive's
  free space and the file count are checked BEFORE "CONNECT", so a refused
  upload never swallows the host's data as a command line.  An existing file
  is refused with +CME ERROR: 407 (file already existed): the host deletes
  first, as on the module.  After CONNECT exactly <file_size> bytes are data:
  Ctrl+Z, ESC, CR, LF, NUL are all file content.  "+++" with the guard times of
  online data mode (S12, 1 s: silence before, the three within it, silence after)
  ends the upload early (the BG96 FILE manual: '"+++" sequence will cause TA to end
  the command and switch to command mode. However, the data previously uploaded
  will be preserved into the file.'): the bytes before it are the file, answered
  "+QFUPL: <size>,<checksum>" then OK (also "+QFUPL: 0,0" and an empty file when
  nothing came first).  A "+++" without the guard times, or that completes
  <file_size>, is data.
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
  files as "RAM:<name>"; a pattern ("*", "?") or the bare form matching nothing is a
  bare OK, a file name that is not there +CME ERROR: 417 (fail to list the file).
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
from emulator.at.parser import EXEC, READ, WRITE
from emulator.at.registry import command
from emulator.at.responses import CONNECT, Cme, Code, CommandError, DataRequest, Prompt, Raw, Response, ok
from emulator.storage.checksum import format_checksum, xor16
from emulator.storage.vfs import ERR_ALREADY_OPEN, FileError

# A FileError (emulator.storage.vfs) carries its +CME code: handlers let it through
# and the interpreter answers it.

DEFAULT_SIZE = 10240
DEFAULT_TIMEOUT = 5
ACK_BLOCK = 1024
ERR_INVALID_INPUT = 400
ERR_TIMEOUT = 421
ERR_LIST_FAILED = 417            # "Fail to list the file"


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

    def on_done(data: bytes, reason: str) -> Response:          # "done", "timeout" or "escape"
        if not data and reason == "timeout":
            raise CommandError(Cme(ERR_TIMEOUT), f"AT+QFUPL {name}: no data")
        modem.files.write(name, data, overwrite=False)
        return ok(f"+QFUPL: {len(data)},{format_checksum(xor16(data), pad=False)}")

    return Response([], None, data=DataRequest(
        on_done, prompt=Prompt.CONNECT, length=size, escape_cancels=False,
        idle_timeout=timeout, echo=False, ack_block=ACK_BLOCK if ackmode else None,
        plus_escape=True))


# AT+QFLST=? and AT+QFLDS=? answer a bare OK: the table's default for a command
# without a declared test form.

def _list(modem, pattern: str | None) -> Response:
    files = modem.files.list(pattern)
    if not files and pattern is not None and not any(c in pattern for c in "*?"):
        # A named file that is not there: 417 "Fail to list the file", as drivers written
        # against real modules take it (a pattern, or the bare form, that matches nothing
        # is a bare OK: a real BG96's empty drive).
        raise CommandError(Cme(ERR_LIST_FAILED), f"AT+QFLST: {pattern} not found")
    return ok(*(f'+QFLST: "{name}",{size}' for name, size in files))


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
    name = args.str(0, max_len=1000)
    if _open_files(modem).is_open_name(name):
        raise FileError(ERR_ALREADY_OPEN, f"{name} is open")
    data = modem.files.read(name)
    # Framed by the interpreter: "\r\nCONNECT\r\n<data>\r\n+QFDWL: ...\r\n" in ATV1,
    # "1\r<data>\r\n+QFDWL: ...\r\n" in ATV0 (CONNECT glued to the data), no CONNECT in ATQ1.
    # Paced: a file larger than the output bound (serial.output_backlog) would be cut if
    # written at once; it goes out as the host reads it, as through a UART.
    return Response([CONNECT, Raw(data), f"+QFDWL: {len(data)},{format_checksum(xor16(data), pad=False)}"], paced=True)


@command("+QFMOV", WRITE, test="+QFMOV: <srcfilename>,<destfilename>[,(0,1)[,(0,1)]]")
def qfmov_write(modem, cmd):
    """AT+QFMOV=<srcfilename>,<destfilename>[,<copy>[,<overwrite>]] (drivers for the EG91,
    UC20 and EC2x send '"<src>","<dst>",0,1' and take OK): copy 1 keeps the source;
    overwrite 1 replaces an existing destination (else 407).  Defaults 0, 0.  No
    wildcards (406)."""
    args = _args(cmd)
    args.at_most(4)
    source = args.str(0, max_len=1000)
    destination = args.str(1, max_len=1000)
    copy = bool(args.int(2, 0, 1, default=0))
    overwrite = bool(args.int(3, 0, 1, default=0))
    modem.files.move(source, destination, copy, overwrite)
    return ok()


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


# -- open files: AT+QFOPEN / QFREAD / QFWRITE / QFSEEK / QFPOSITION / QFTUCAT / QFCLOSE --------
# (emulator.storage.handles; test forms as a Quectel module prints them: the BG96 FILE
# manual's QFOPEN/QFPOSITION, a BG770A capture's QFREAD/QFWRITE/QFCLOSE; QFSEEK's and
# QFTUCAT's by the same pattern.)

HANDLE_MAX = 2**31 - 1          # "The data type is 4 bytes"


def _open_files(modem):
    return modem.feature("open_files", _make_open_files)


def _make_open_files(modem):
    from emulator.storage.handles import OpenFiles
    p = modem.profile
    table = OpenFiles(modem.files, p.get("files.first_handle", 1), p.get("files.max_open", 10))
    modem.on("reset", table.close_all)          # a restart closes every handle
    return table


def _handle_args(cmd, at_most: int) -> tuple[Args, int]:
    """The parameters of a command on an open file (at most `at_most`) and its handle."""
    args = _args(cmd)
    args.at_most(at_most)
    return args, args.int(0, 0, HANDLE_MAX)


@command("+QFOPEN", WRITE, test="+QFOPEN: <filename>[,(0-2)]")
def qfopen_write(modem, cmd):
    args = _args(cmd)
    args.at_most(2)
    name = args.str(0, max_len=1000)
    mode = args.int(1, 0, 2, default=0)
    return ok(f"+QFOPEN: {_open_files(modem).open(name, mode)}")


@command("+QFOPEN", READ)
def qfopen_read(modem, cmd):
    return ok(*(f'+QFOPEN: "{modem.files.display_name(f.drive, f.basename)}",{f.handle},{f.mode}'
                for f in _open_files(modem).listing()))


@command("+QFREAD", WRITE, test="+QFREAD: <filehandle>[,<length>]")
def qfread_write(modem, cmd):
    args, handle = _handle_args(cmd, 2)
    length = args.int(1, 1, 2**31 - 1, default=None)
    data = _open_files(modem).read(handle, length)
    # "\r\nCONNECT <n>\r\n<n bytes>\r\nOK\r\n" (Quectel's own host code reads exactly so);
    # paced as AT+QFDWL's file.
    return Response([Code("CONNECT", str(len(data))), Raw(data, crlf=False)], paced=True)


@command("+QFWRITE", WRITE, test="+QFWRITE: <filehandle>[,<length>[,<timeout>]]")
def qfwrite_write(modem, cmd):
    args, handle = _handle_args(cmd, 3)
    length = args.int(1, 1, 2**31 - 1, default=DEFAULT_SIZE)
    timeout = args.int(2, 1, 65535, default=DEFAULT_TIMEOUT)
    files = _open_files(modem)
    files.check_write(handle, length)           # refused before CONNECT (414, 416, 403)

    def on_done(data: bytes, reason: str) -> Response:          # "done" or "timeout"
        written, total = files.write(handle, data)
        return ok(f"+QFWRITE: {written},{total}")

    return Response([], None, data=DataRequest(
        on_done, prompt=Prompt.CONNECT, length=length, escape_cancels=False,
        idle_timeout=timeout, echo=False))


@command("+QFSEEK", WRITE, test="+QFSEEK: <filehandle>,<offset>[,(0-2)]")
def qfseek_write(modem, cmd):
    args, handle = _handle_args(cmd, 3)
    offset = args.int(1, 0, 2**31 - 1)
    whence = args.int(2, 0, 2, default=0)
    _open_files(modem).seek(handle, offset, whence)
    return ok()


@command("+QFPOSITION", WRITE, test="+QFPOSITION: <filehandle>")
def qfposition_write(modem, cmd):
    _, handle = _handle_args(cmd, 1)
    return ok(f"+QFPOSITION: {_open_files(modem).position(handle)}")


@command("+QFTUCAT", WRITE, test="+QFTUCAT: <filehandle>")
def qftucat_write(modem, cmd):
    _, handle = _handle_args(cmd, 1)
    _open_files(modem).truncate(handle)
    return ok()


@command("+QFCLOSE", WRITE, test="+QFCLOSE: <filehandle>")
def qfclose_write(modem, cmd):
    _, handle = _handle_args(cmd, 1)
    _open_files(modem).close(handle)
    return ok()
