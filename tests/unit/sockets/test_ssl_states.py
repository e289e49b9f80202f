"""The SSL socket's one transition table (emulator/sockets/ssl_socket.py), without a
pty or a network: the table is the one the module documents, the numbers are the
EC2x's <socket_state>, and an event the table does not allow is a bug: raised under
test, logged and ignored in a running emulator."""
from __future__ import annotations

import asyncio
import logging
import re

import pytest

import emulator.sockets.ssl_socket as ssl_socket
from emulator.modem.timers import Timers
from emulator.sockets.ssl_socket import (CONNECTED, INITIAL, OPENING, TRANSITIONS, IllegalTransition,
                                         SslSocket, State)


class Owner:
    def __init__(self) -> None:
        self.opened: list[tuple[str | None, str]] = []
        self.closed: list[str] = []

    def on_opened(self, sock, kind, reason, exc=None) -> None:
        self.opened.append((kind, reason))

    def on_data(self, sock, was_empty) -> None:
        pass

    def on_closed(self, sock, reason) -> None:
        self.closed.append(reason)


def make_socket(owner: Owner) -> SslSocket:
    return SslSocket(owner, 3, pdp_id=1, ctx_id=0, host="h.test", port=443, delivery=None,
                     recv_limit=1024, timers=Timers(None))


def test_states_are_the_ec2x_socket_state_numbers():
    assert [(s.name, int(s)) for s in State] == [("INITIAL", 0), ("OPENING", 1), ("CONNECTED", 2), ("CLOSING", 4)]


def test_the_documented_table_is_the_table():
    rows = re.findall(r"^ {4}(INITIAL|OPENING|CONNECTED|CLOSING|any) +(\w+) +(INITIAL|OPENING|CONNECTED|CLOSING) ",
                      ssl_socket.__doc__, re.M)
    documented = {}
    for state, event, target in rows:
        for s in (State if state == "any" else [State[state]]):
            documented[(s, event)] = State[target]
    assert len(rows) == 11 and documented == TRANSITIONS


def test_the_state_is_read_only():
    sock = make_socket(Owner())
    with pytest.raises(AttributeError):
        sock.state = CONNECTED


def run(steps) -> Owner:
    """await steps(sock, owner) on a fresh loop with a new socket; returns the owner."""
    owner = Owner()

    async def main():
        await steps(make_socket(owner), owner)
    asyncio.run(main())
    return owner


def test_a_refused_open_answers_once_and_ends_initial():
    async def steps(sock, owner):
        sock.refuse("bad_config", "seclevel 1 needs cacert")
        assert sock.state is OPENING and owner.opened == []      # the answer follows the command's OK
        await asyncio.sleep(0)
        assert sock.state is INITIAL
    assert run(steps).opened == [("bad_config", "seclevel 1 needs cacert")]


def test_bearer_lost_fails_an_open_and_a_later_close_changes_nothing():
    async def steps(sock, owner):
        sock.refuse("bad_config", "late")
        sock.bearer_lost("PDP context 1 deactivated")
        assert sock.state is INITIAL
        await asyncio.sleep(0)                       # the refusal's own answer is not a second one
        await sock.close(10)                         # nothing to close: no transition, no error
        assert sock.state is INITIAL
    assert run(steps).opened == [("pdp", "PDP context 1 deactivated")]


def test_an_illegal_transition_raises_under_test():
    async def steps(sock, owner):
        sock.refuse("bad_config", "no CA")
        with pytest.raises(IllegalTransition, match="event 'open' is not allowed in state OPENING"):
            sock.refuse("bad_config", "again")
        await asyncio.sleep(0)
    assert run(steps).opened == [("bad_config", "no CA")]


def test_an_illegal_transition_is_logged_and_ignored_in_a_running_emulator(monkeypatch, caplog):
    monkeypatch.setattr(ssl_socket, "strict_states", lambda: False)
    caplog.set_level(logging.ERROR, logger="emulator")

    async def steps(sock, owner):
        sock.refuse("bad_config", "no CA")
        sock.refuse("bad_config", "again")           # ignored: no second answer, state kept
        assert sock.state is OPENING
        await asyncio.sleep(0)
        assert sock.state is INITIAL
    assert run(steps).opened == [("bad_config", "no CA")]
    assert [r.getMessage() for r in caplog.records] == [
        "SSL socket 3: event 'open' is not allowed in state OPENING (a bug: event ignored, state kept)"]


def test_strict_only_when_asked(monkeypatch):
    assert ssl_socket.strict_states()              # tests/__init__.py asks for it
    monkeypatch.delenv(ssl_socket.STRICT_ENV, raising=False)
    assert not ssl_socket.strict_states()
    monkeypatch.setenv(ssl_socket.STRICT_ENV, "1")
    assert ssl_socket.strict_states()
