"""V.250 basic commands: ATE ATV ATQ ATZ AT&F AT&W AT&V ATI ATSn AT&C AT&D and AT+CMEE."""
from __future__ import annotations

from emulator.at.args import Args
from emulator.at.parser import EXEC, READ, TEST, WRITE
from emulator.at.registry import command
from emulator.at.responses import CommandError, Response, ok
from emulator.modem.settings import SREG_RANGES


def _flag(modem, cmd, lo: int = 0, hi: int = 1) -> int:
    """Basic commands take an optional digit; omitted means 0 (V.250)."""
    return Args(cmd).int(0, lo, hi, default=0)


def _setting(attr: str, hi: int, kind: type):
    def handler(modem, cmd):
        setattr(modem.settings, attr, kind(_flag(modem, cmd, 0, hi)))
        return ok()
    return handler


# A digit kept in the port settings (saved by AT&W).
for _name, _attr, _hi, _kind in (("E", "echo", 1, bool), ("V", "verbose", 1, bool),
                                 ("Q", "quiet", 1, bool), ("&C", "dcd", 1, int),
                                 ("&D", "dtr", 2, int)):
    command(_name, EXEC)(_setting(_attr, _hi, _kind))


def _action(do):
    def handler(modem, cmd):
        _flag(modem, cmd, 0, 0)          # ATZ0 is ATZ; ATZ1 is an error
        do(modem)
        return ok()
    return handler


def _save(modem) -> None:
    try:
        modem.save_settings()
    except OSError as exc:               # the state dir is full or read-only: nothing saved
        raise CommandError("ERROR", f"AT&W: the settings cannot be saved: {exc.strerror or exc}") from None


# Settings sets: ATZ the AT&W one, AT&F the profile's factory one; AT&W saves.
for _name, _do in (("Z", lambda modem: modem.restore_saved_settings()),
                   ("&F", lambda modem: modem.restore_factory_settings()),
                   ("&W", _save)):
    command(_name, EXEC)(_action(_do))


# AT&V's lines, in the order of the "AT&V Response" table of Quectel's LTE Standard AT
# commands manuals (&C &D &F &W E Q V X Z, then S0 S3 S4 S5 S6 S7 S8 S10); &F, &W and Z
# name the one profile there is (0).
_SHOWN_SREGS = (0, 3, 4, 5, 6, 7, 8, 10)


@command("&V", EXEC)
def show_settings(modem, cmd):
    _flag(modem, cmd, 0, 0)
    s = modem.settings
    return ok(f"&C: {s.dcd}", f"&D: {s.dtr}", "&F: 0", "&W: 0", f"E: {int(s.echo)}",
              f"Q: {int(s.quiet)}", f"V: {int(s.verbose)}", f"X: {s.x}", "Z: 0",
              *(f"S{n}: {s.sreg[n]}" for n in _SHOWN_SREGS))


@command("I", EXEC)
def identify(modem, cmd):
    _flag(modem, cmd, 0, 0)
    return ok(*modem.profile["identity.ati"])


# S registers: S3 line terminator, S4 response formatting, S5 backspace, ...


def _register(cmd) -> int:
    number = int(cmd.name[1:])
    if number not in SREG_RANGES:
        raise CommandError("ERROR", f"S{number} is not a supported register")
    return number


@command("S", READ)
def sreg_read(modem, cmd):
    return ok(f"{modem.settings.sreg[_register(cmd)]:03d}")


@command("S", WRITE)
def sreg_write(modem, cmd):
    number = _register(cmd)
    lo, hi = SREG_RANGES[number]
    modem.settings.sreg[number] = Args(cmd).int(0, lo, hi)
    return ok()


@command("S", TEST)
def sreg_test(modem, cmd):
    # Not a declared test form: the answer depends on the register named (ATS3=?).
    lo, hi = SREG_RANGES[_register(cmd)]
    return ok(f"({lo}-{hi})")


@command("+CMEE", WRITE, test="+CMEE: (0-2)")
def cmee_write(modem, cmd):
    args = Args(cmd, at_most=1)
    modem.settings.cmee = args.int(0, 0, 2, default=0)
    return ok()


@command("+CMEE", READ)
def cmee_read(modem, cmd):
    return ok(f"+CMEE: {modem.settings.cmee}")


@command("+CMEE", EXEC)
def cmee_exec(modem, cmd):
    modem.settings.cmee = 0
    return ok()


@command("O", EXEC)
def ato(modem, cmd):
    """ATO: back to online data mode with the connection that left it last ("+++", DTR
    with AT&D1), also when AT+QISWTMD switched it to buffer or push mode since: CONNECT,
    its waiting data first; NO CARRIER when there is none (any more).  The EC2x note,
    "Return to transparent access mode"."""
    Args(cmd, at_most=1).int(0, 0, 0, default=0)
    link = modem.interpreter.last_online
    if link is None or not link.resume():
        return Response([], "NO CARRIER")
    return Response([], None, online=link)
