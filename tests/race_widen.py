"""An opt-in pytest plugin that widens one kind of test race: a URC written while the host's
next command line is on its way comes before that command's answer -- a module may write it
there, so a test that asserts the answer's exact bytes right after a send to an echo peer (or
an open whose server greets, a CONNECT, an incoming connection) fails, but only under load
(the CI machine: two cores, twelve workers).  See 51f5c2b and 3b1b558.

    .venv/bin/python -m pytest -p tests.race_widen tests/e2e/test_x.py

Before the host's next write (emulator.testing.host.Host.write, the driver models'
tests.e2e.socket_support.Uart.command) it sleeps RACE_DELAY seconds (0.15) when, since its
previous write, it read something after which a peer may send, or a test's DrivenPeer sent:
the peer's bytes then reach the modem first, as on a loaded machine.  At most RACE_CAP naps
(25) per test, so long send loops stay quick.  Never on by default: it changes timings only.
"""
from __future__ import annotations

import os
import re
import time

from emulator.testing import host as _host

DELAY = float(os.environ.get("RACE_DELAY", "0.15"))
CAP = int(os.environ.get("RACE_CAP", "25"))
# what a peer may answer right after: SEND OK, an open's result, CONNECT, an incoming connection
TRIGGER = re.compile(rb"SEND OK\r\n|\+Q(?:SSL|I)OPEN: \d+,0\r\n|CONNECT(?: \d+)?\r\n|\+Q(?:SSL)?I?URC: \"incoming\"")
_state = {"peer_sent": False, "naps": 0}


def pytest_runtest_setup(item) -> None:
    _state.update(peer_sent=False, naps=0)


def _nap_if(seen: bytes) -> None:
    if TRIGGER.search(seen) or _state["peer_sent"]:
        _state["peer_sent"] = False
        _state["naps"] += 1
        if _state["naps"] <= CAP:
            time.sleep(DELAY)


_write = _host.Host.write


def _widened_write(self, data):
    _nap_if(bytes(self.transcript[getattr(self, "_race_mark", 0):]))
    self._race_mark = len(self.transcript)
    return _write(self, data)


_host.Host.write = _widened_write

try:                                    # (the e2e helpers: absent when only tests/unit runs)
    from tests.e2e import socket_support as _support
except ImportError:
    _support = None

if _support is not None:
    _peer_send = _support.DrivenPeer.send
    _command = _support.Uart.command

    def _noted_send(self, data):
        sent = _peer_send(self, data)
        _state["peer_sent"] = True
        return sent

    def _widened_command(self, line, timeout=10):
        _nap_if(bytes(self.wire_rx[getattr(self, "_race_mark", 0):]))
        answer = _command(self, line, timeout)
        self._race_mark = len(self.wire_rx)
        return answer

    _support.DrivenPeer.send = _noted_send
    _support.Uart.command = _widened_command
