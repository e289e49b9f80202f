"""EscapeDetector when the loop reads the host's bytes late (sans-IO: `now` is when a chunk
is read).  One or two "+" held after a silence whose guard time ran out before expire() ran
(the loop busy past the deadline; asyncio runs ready reads before due timers) are data, and
the chunk read then is taken as coming after them: after its own silence, "+++" may begin an
escape (transparent round 6 found the chunk always taken as data: the escape was swallowed,
"++++" sent to the server)."""
from __future__ import annotations

import pytest

from emulator.at.escape import EscapeDetector


@pytest.mark.parametrize("held", [b"+", b"++"])
def test_late_held_pluses_are_data_and_the_next_chunk_may_escape(held):
    d = EscapeDetector(guard=0.5, now=0.0)
    assert d.feed(held, 0.6) == b""              # after 0.6 s of silence: held
    assert d.deadline() == pytest.approx(1.1)
    # expire() did not run at 1.1: the loop was busy; "+++" written at 1.5 is read at 2.2
    assert d.feed(b"+++", 2.2) == held            # the held ones, as data, now
    assert d.deadline() == pytest.approx(2.7)     # "+++" then a guard time: an escape
    assert d.expire(2.7) == (b"", True)


def test_late_held_plus_then_data_is_all_data_in_order():
    d = EscapeDetector(guard=0.5, now=0.0)
    assert d.feed(b"+", 1.0) == b""
    assert d.feed(b"abc", 3.0) == b"+abc"
    assert d.deadline() is None


def test_a_late_chunk_without_its_own_silence_is_data():
    """"+" at 1.0 and "+" at 1.5 (held: within the guard time of the first); their guard time
    passes at 2.0 unseen; the chunk read at 2.1 follows the last "+" by only 0.6 s of a 1 s
    guard: no silence of its own, all data, in order."""
    d = EscapeDetector(guard=1.0, now=0.0)
    assert d.feed(b"+", 1.0) == b""
    assert d.feed(b"+", 1.5) == b""
    assert d.feed(b"+++", 2.1) == b"+++++"
    assert d.deadline() is None


def test_pluses_within_the_guard_time_still_join_the_held_ones():
    d = EscapeDetector(guard=1.0, now=0.0)
    assert d.feed(b"+", 1.0) == b""
    assert d.feed(b"++", 1.4) == b""
    assert d.expire(2.4) == (b"", True)
