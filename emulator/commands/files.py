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
  (counted in _TICK steps, so up to 0.25 s later).  What arrived until then
  is kept, as the note says of an interrupted upload ("the data previously
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
from emulator.at.parser import EXEC, TEST, WRITE
from emulator.at.registry import command
from emulator.at.responses import Cme, CommandError, DataRequest, Raw, Response, ok
from emulator.storage.checksum import format_checksum, xor16
from emulator.storage.vfs import FileError

DEFAULT_SIZE = 10240
DEFAULT_TIMEOUT = 5
ACK_BLOCK = 1024
ERR_INVALID_INPUT = 400
ERR_TIMEOUT = 421
_TICK = 0.25              # seconds: resolution of the inactivity timeout


def _args(cmd) -> Args:
    return Args(cmd, error=Cme(ERR_INVALID_INPUT))


def _file_error(exc: FileError) -> CommandError:
    return CommandError(Cme(exc.code), str(exc))


def _connect(modem) -> bytes:
    """CONNECT as the interpreter frames a result code (ATV / ATQ)."""
    s = modem.settings
    if s.quiet:
        return b""
    return b"\r\nCONNECT\r\n" if s.verbose else b"1\r"


class _Upload:
    """One AT+QFUPL transfer, collected as a chain of DataRequests: each link
    ends at an ack block boundary or after one _TICK, which lets the timeout
    count idle time rather than the whole transfer."""

    def __init__(self, modem, name: str, size: int, timeout: int, ackmode: bool) -> None:
        self.modem, self.name, self.size = modem, name, size
        self.timeout, self.ackmode = timeout, ackmode
        self.tick = min(_TICK, timeout)
        self.buf = bytearray()
        self.idle = 0.0

    def request(self, prompt: bytes) -> DataRequest:
        want = self.size - len(self.buf)
        if self.ackmode:
            want = min(want, ACK_BLOCK - len(self.buf) % ACK_BLOCK)
        return DataRequest(self.on_done, prompt=prompt, length=want,
                           escape_cancels=False, timeout=self.tick, echo=False)

    def on_done(self, data: bytes | None, reason: str) -> Response:
        self.buf += data or b""
        if reason == "timeout":
            self.idle = 0.0 if data else self.idle + self.tick
            if self.idle + 1e-9 < self.timeout:
                return Response([], None, data=self.request(b""))
            return self.finish()
        self.idle = 0.0
        if len(self.buf) < self.size:          # an ack block is complete
            return Response([], None, data=self.request(b"A"))
        return self.finish()

    def finish(self) -> Response:
        if not self.buf:
            raise CommandError(Cme(ERR_TIMEOUT), f"AT+QFUPL {self.name}: no data")
        payload = bytes(self.buf)
        try:
            self.modem.files.write(self.name, payload, overwrite=False)
        except FileError as exc:
            raise _file_error(exc) from None
        return ok(f"+QFUPL: {len(payload)},{format_checksum(xor16(payload))}")


@command("+QFUPL", TEST)
def qfupl_test(modem, cmd):
    return ok("+QFUPL: <filename>[,(1-<freesize>)[,(1-65535)[,(0,1)]]]")


@command("+QFUPL", WRITE)
def qfupl_write(modem, cmd):
    args = _args(cmd)
    args.at_most(4)
    name = args.str(0, max_len=1000)
    size = args.int(1, 1, 2**31 - 1, default=DEFAULT_SIZE)
    timeout = args.int(2, 1, 65535, default=DEFAULT_TIMEOUT)
    ackmode = bool(args.int(3, 0, 1, default=0))
    try:
        modem.files.check_writable(name, size, overwrite=False)
    except FileError as exc:
        raise _file_error(exc) from None
    upload = _Upload(modem, name, size, timeout, ackmode)
    return Response([], None, data=upload.request(_connect(modem)))


@command("+QFLST", TEST)
@command("+QFLDS", TEST)
def bare_test(modem, cmd):
    return ok()


def _list(modem, pattern: str | None) -> Response:
    try:
        entries = modem.files.list(pattern)
    except FileError as exc:
        raise _file_error(exc) from None
    return ok(*(f'+QFLST: "{name}",{size}' for name, size in entries))


@command("+QFLST", EXEC)
def qflst_exec(modem, cmd):
    return _list(modem, None)


@command("+QFLST", WRITE)
def qflst_write(modem, cmd):
    args = _args(cmd)
    args.at_most(1)
    return _list(modem, args.str(0, max_len=1000))


@command("+QFDEL", TEST)
def qfdel_test(modem, cmd):
    return ok("+QFDEL: <filename>")


@command("+QFDEL", WRITE)
def qfdel_write(modem, cmd):
    args = _args(cmd)
    args.at_most(1)
    pattern = args.str(0, max_len=1000)
    try:
        if "*" in pattern or "?" in pattern:
            modem.files.delete_matching(pattern)
        else:
            modem.files.delete(pattern)
    except FileError as exc:
        raise _file_error(exc) from None
    return ok()


@command("+QFDWL", TEST)
def qfdwl_test(modem, cmd):
    return ok("+QFDWL: <filename>")


@command("+QFDWL", WRITE)
def qfdwl_write(modem, cmd):
    args = _args(cmd)
    args.at_most(1)
    name = args.str(0, max_len=1000)
    try:
        data = modem.files.read(name)
    except FileError as exc:
        raise _file_error(exc) from None
    # The interpreter ends every line with CR LF and, in ATV1, opens the block
    # with CR LF: "\r\nCONNECT\r\n<data>\r\n+QFDWL: ...\r\n".  In ATV0 CONNECT
    # is "1\r" and glued to the data, so both go out as one raw line.
    summary = f"+QFDWL: {len(data)},{format_checksum(xor16(data))}"
    s = modem.settings
    if s.verbose:
        lines = [Raw(data), summary] if s.quiet else ["CONNECT", Raw(data), summary]
    else:
        lines = [Raw(_connect(modem) + data), summary]
    return Response(lines, "OK")


@command("+QFLDS", WRITE)
def qflds_write(modem, cmd):
    args = _args(cmd)
    args.at_most(1)
    drive = args.str(0, max_len=16)
    try:
        free, total = modem.files.space(drive)
    except FileError as exc:
        raise _file_error(exc) from None
    return ok(f"+QFLDS: {free},{total}")


@command("+QFLDS", EXEC)
def qflds_exec(modem, cmd):
    used, count = modem.files.usage("UFS")
    return ok(f"+QFLDS: {used},{count}")
