"""The suite's own scheduling (tests/conftest.py pytest_collection_modifyitems): the tests
listed in tests/slow_first.txt are collected first, longest first, and the list still names
the suite's tests (a list gone stale would quietly give the long tail back)."""
from __future__ import annotations

from tests.conftest import SLOW_FIRST_APPLIED, slow_first_rows as _listed


def test_the_list_is_well_formed_and_longest_first():
    rows = _listed()
    assert len(rows) >= 100
    assert [s for s, _ in rows] == sorted((s for s, _ in rows), reverse=True)
    assert len({n for _, n in rows}) == len(rows)
    assert all(n.startswith("tests/") and "::" in n for _, n in rows)


def test_the_listed_tests_exist_and_are_collected_first(request):
    applied = request.config.stash[SLOW_FIRST_APPLIED]
    assert applied == hasattr(request.config, "workerinput")      # xdist workers only
    if not applied:
        return
    collected = [item.nodeid for item in request.session.items]
    listed = {nodeid: seconds for seconds, nodeid in _listed()}
    if len(collected) > 5000:                       # the whole suite (make test)
        everything = set(collected)
        missing = [n for n in listed if n not in everything]
        assert len(missing) <= len(listed) // 10, missing    # renamed or removed: refresh the list
    present = [n for n in collected if n in listed]
    head = collected[:len(present)]
    assert head == present                          # every listed test before any other
    assert [listed[n] for n in head] == sorted((listed[n] for n in head), reverse=True)
