"""Root causes of two flakes seen in a flakiness audit (3 busy loops + pytest -n 2).

1. test_review_replay_changes_8::test_an_edited_connected_record_still_replays[duplicated]:
   the replay sent AT+QSSLCLOSE before the stand-in's echo 'idle' reached the host.  Cause:
   emulator/tools/trace.py _connects_before counted every "connected" record, the duplicate
   too, while the replay's modem makes one connect (tracer.connects == 1): replay_records'
   behind() stays True for every later host chunk, so each one is sent when its patience
   runs out (10 s, then 1 s) instead of when the recorded output has come.  The close goes
   1 s after 'idle' whether the echo came or not: a loaded machine whose echo takes longer
   than 1 s replays it out of order.  Shown here deterministically with a stand-in whose
   echo comes 1.5 s late (the same late stand-in replays the unedited trace with no
   difference: there the close waits for the echo)."""
from __future__ import annotations

import time

from emulator.tools import trace
from tests.e2e import replay_support as rs
from tests.e2e.test_review_replay_changes_8 import EDITS, _edited, slow_trace  # noqa: F401 (a fixture)

LATE = 1.5            # the stand-in's echo comes this late (a loaded machine, made certain)


def _late_echo(monkeypatch, echo_in: int) -> None:
    """The replay's stand-ins send what the recording's server sent at host byte count
    `echo_in` or later only LATE seconds after the replay got that far."""
    class LateEcho(trace.ReplayPeer):
        async def _wait_host(self, sent: int = 0, *rest, **kw) -> None:
            await super()._wait_host(sent, *rest, **kw)
            if sent >= echo_in:
                import asyncio
                await asyncio.sleep(LATE)
    monkeypatch.setattr(trace, "ReplayPeer", LateEcho)


def _echo_in(path) -> int:
    (received,) = [r for r in rs.records(path) if r["kind"] == "received"]
    return received["in"]


# Was a bug, fixed: trace.py _connects_before counted a duplicated "connected" record twice;
# the replay makes one connect, so behind() never cleared for the host chunks after it (they
# went on timers: 10 s, then 1 s each -- a flake under load when the echo took longer).
def test_a_duplicated_connected_record_is_one_connect_for_the_host_chunks_that_follow(slow_trace, tmp_path):
    """The replay's modem makes one TCP connect for the socket (scripts_of keeps one
    connect_at): the host chunks after the record wait for one connect, not two."""
    dup = rs.records(_edited(tmp_path, slow_trace, "dup.trace", EDITS["duplicated"]))
    assert sum(r["kind"] == "connected" for r in dup) == 2
    (script,) = trace.scripts_of(dup)
    assert script.connect_at[:2] == (117, 29)
    before = trace._connects_before(dup, [script])
    counts = {r["data"]: before[id(r)] for r in dup if r["kind"] == "io" and r["dir"] == "in" and r["in"] > 117}
    assert counts == {"AT+QSSLSEND=1,4\r": 1, "idle": 1, "AT+QSSLCLOSE=1\r\n": 1}


def test_the_unedited_trace_waits_for_its_one_connect(slow_trace):
    recs = rs.records(slow_trace)
    before = trace._connects_before(recs, trace.scripts_of(recs))
    counts = {r["data"]: before[id(r)] for r in recs if r["kind"] == "io" and r["dir"] == "in"}
    assert counts == {"ATE0\r": 0, 'AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1\r\n': 0,
                      'AT+QSSLCFG="seclevel",1,0\r\n': 0, 'AT+QSSLOPEN=1,1,1,"www.iottest.work",443,1\r\n': 0,
                      "AT+QSSLSEND=1,4\r": 1, "idle": 1, "AT+QSSLCLOSE=1\r\n": 1}


def test_a_late_echo_still_replays_the_unedited_trace(slow_trace, capsys, monkeypatch):
    """Control: the stand-in's echo 1.5 s late; AT+QSSLCLOSE waits for its URC (the
    recorded output before it) -- no difference."""
    _late_echo(monkeypatch, _echo_in(slow_trace))
    start = time.monotonic()
    rs.replays(capsys, slow_trace, "--max-gap", "0.2")
    assert time.monotonic() - start >= LATE


# Was a bug, fixed (the same): AT+QSSLCLOSE went 1 s after "idle" on a timer, before an echo
# that took longer, and the replay reported a difference.
def test_a_late_echo_replays_the_trace_with_a_duplicated_connected_record(slow_trace, tmp_path, capsys, monkeypatch):
    path = _edited(tmp_path, slow_trace, "duplicated.trace", EDITS["duplicated"])
    _late_echo(monkeypatch, _echo_in(path))
    rs.replays(capsys, path, "--max-gap", "0.2")
