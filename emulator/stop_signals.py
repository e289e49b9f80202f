"""Stop signals (SIGINT, SIGTERM, SIGHUP) that came during start-up, before the event loop's
own handlers: one record that the entry point (emulator/__main__.py, while the modules load)
and the CLI (emulator/tools/cli.py, while its files are read) both write, and the CLI reads
once its handlers are in place.  A handler's exception can be swallowed on the way (a
finalizer running it prints "Exception ignored in ..."), the note here cannot.  Light on
purpose: imported before anything else of the emulator."""
import signal

STOPS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

# The stop signals this process was started with ignored (nohup: SIGHUP; a non-interactive
# shell's background job: SIGINT) stay ignored, as the convention goes: the emulator installs
# no handler for them (read here, at the first import, before any handler is installed).
IGNORED = frozenset(sig for sig in STOPS if signal.getsignal(sig) is signal.SIG_IGN)

seen: list[int] = []


def handled() -> tuple:
    """The stop signals the emulator handles: STOPS less those inherited ignored."""
    return tuple(sig for sig in STOPS if sig not in IGNORED)
