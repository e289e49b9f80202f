"""`python -m emulator` and the `modem-emulator` command: the CLI (emulator/tools/cli.py)."""
import signal
import sys

from emulator import stop_signals


def _stopped_while_loading(signum, frame) -> None:
    # Nothing is made yet while the modules load (no link, no state dir touched): the run
    # just ends, exit 0 and no traceback, as a stop signal does at any moment of start-up.
    # (A handler run inside a finalizer -- importlib's module-lock callback -- has its
    # SystemExit swallowed: run() then sees the signal once the import is over, and
    # _quiet_unraisable keeps Python from printing the swallowed exit as a traceback.)
    stop_signals.seen.append(signum)
    raise SystemExit(0)


def _quiet_unraisable(previous):
    def hook(unraisable) -> None:
        if isinstance(unraisable.exc_value, SystemExit) and stop_signals.seen:
            return
        previous(unraisable)
    return hook


def run() -> int:
    """The CLI's main(), with stop signals covered while its modules load (~0.2 s, longer on
    a loaded machine) and until main() installs its own handlers (after its options are
    read).  The tools (`trace`, `replay`) get the handlers there were."""
    previous = {sig: signal.signal(sig, _stopped_while_loading) for sig in stop_signals.handled()}
    unraisable, sys.unraisablehook = sys.unraisablehook, _quiet_unraisable(sys.unraisablehook)
    try:
        from emulator.tools.cli import is_subcommand, main
    finally:
        sys.unraisablehook = unraisable
    if stop_signals.seen:
        return 0
    if is_subcommand(sys.argv[1:]):
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return main()


if __name__ == "__main__":
    sys.exit(run())
