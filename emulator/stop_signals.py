"""Stop signals (SIGINT, SIGTERM, SIGHUP) that came during start-up, before the event loop's
own handlers: one record that the entry point (emulator/__main__.py, while the modules load)
and the CLI (emulator/tools/cli.py, while its files are read) both write, and the CLI reads
once its handlers are in place.  A handler's exception can be swallowed on the way (a
finalizer running it prints "Exception ignored in ..."), the note here cannot.  Light on
purpose: imported before anything else of the emulator."""
import signal

STOPS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

seen: list[int] = []
