"""The port's mode: one state machine, one table of allowed transitions.

    COMMAND --PROMPT--> DATA      a handler asked for data: "> " / CONNECT is out
    COMMAND --AWAIT---> PENDING   a handler's answer comes later (AT+QSSLCLOSE lingering)
    DATA    --DONE----> COMMAND   length reached, Ctrl+Z, ESC or the idle timeout: the
                                  handler's on_done runs and is answered in command mode
    PENDING --DONE----> COMMAND   the answer came; it is written in command mode
    DATA    --HANGUP--> COMMAND   the host closed the port: the half-entered data are dropped
    COMMAND, PENDING --HANGUP--> themselves (a pending answer still comes)
    COMMAND --ONLINE--> ONLINE    a handler answered CONNECT with a link (transparent mode)
    ONLINE  --ESCAPE--> COMMAND   "+++" with guard times or DTR (OK), or the link ended (NO CARRIER)
    ONLINE  --HANGUP--> COMMAND
    any     --RESET---> COMMAND   the module restarted (AT+CFUN=1,1, the control API's
                                  reboot): a data phase, a pending answer (never written,
                                  its `then` never run) or online mode is gone

A chained data phase (a data handler asking for more data) is DATA -> COMMAND ->
DATA: every outcome is handled in command mode, so there is one place that writes
answers.  Any other (mode, event) pair is a bug in the emulator, never something
a host can cause: Interpreter._enter raises IllegalTransition, and the
interpreter's entry points log it and put the port back in command mode -- or,
with Interpreter.strict (MODEM_EMULATOR_STRICT=1; the test suite sets it), let it propagate.
"""
from __future__ import annotations

from enum import Enum


class Mode(Enum):
    COMMAND = "command"          # the lexer reads command lines
    DATA = "data prompt"         # bytes go to a DataRequest ("> ", CONNECT)
    PENDING = "pending answer"   # a handler's answer is awaited; input waits in the inbox
    ONLINE = "online data"       # transparent mode: bytes go to a connection (OnlineLink)

    # (members are singletons compared by identity: the identity hash, not Enum's Python-level
    # hash of the name, for TRANSITIONS' lookups on every command)
    __hash__ = object.__hash__


class Event(Enum):
    PROMPT = "a handler asked for data"
    AWAIT = "a handler's answer is pending"
    DONE = "the data phase or the pending answer ended"
    HANGUP = "the host closed the port"
    ONLINE = "a handler entered online data mode"
    ESCAPE = "online data mode ended"
    RESET = "the module restarted"

    __hash__ = object.__hash__


TRANSITIONS: dict[Mode, dict[Event, Mode]] = {
    Mode.COMMAND: {Event.PROMPT: Mode.DATA, Event.AWAIT: Mode.PENDING,
                   Event.ONLINE: Mode.ONLINE, Event.HANGUP: Mode.COMMAND, Event.RESET: Mode.COMMAND},
    Mode.DATA: {Event.DONE: Mode.COMMAND, Event.HANGUP: Mode.COMMAND, Event.RESET: Mode.COMMAND},
    Mode.PENDING: {Event.DONE: Mode.COMMAND, Event.HANGUP: Mode.PENDING, Event.RESET: Mode.COMMAND},
    Mode.ONLINE: {Event.ESCAPE: Mode.COMMAND, Event.HANGUP: Mode.COMMAND, Event.RESET: Mode.COMMAND},
}


class IllegalTransition(RuntimeError):
    """An event the current mode does not allow: an emulator bug."""

    def __init__(self, mode: Mode, event: Event) -> None:
        super().__init__(f"{event.value} ({event.name}) is not allowed in {mode.value} mode")
        self.mode = mode
        self.event = event


def next_mode(mode: Mode, event: Event) -> Mode:
    try:
        return TRANSITIONS[mode][event]
    except KeyError:
        raise IllegalTransition(mode, event) from None
