"""emulator/__main__.py: a stop signal while the CLI's modules load ends the run with exit 0
and no traceback -- also when it lands inside a finalizer (importlib's module-lock callback),
where Python swallows the handler's SystemExit and prints it as 'Exception ignored in'
(seen once in a full run: test_adversarial_crash_consistency's stop-during-import test)."""
from __future__ import annotations

import types

from emulator import __main__ as entry
from emulator import stop_signals


def test_a_swallowed_stop_is_not_printed_and_other_unraisables_are(monkeypatch):
    seen = []
    hook = entry._quiet_unraisable(seen.append)
    monkeypatch.setattr(stop_signals, "seen", [15])
    stop = types.SimpleNamespace(exc_value=SystemExit(0))
    other = types.SimpleNamespace(exc_value=ValueError("a real one"))
    hook(stop)
    hook(other)
    assert seen == [other]
    monkeypatch.setattr(stop_signals, "seen", [])
    hook(stop)                       # no stop signal came: a SystemExit of something else
    assert seen == [other, stop]
