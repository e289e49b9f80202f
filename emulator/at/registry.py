"""The one table of AT command handlers.

A handler declares what it answers with `@command("+QSSLCFG", WRITE, variant="ec2x")`.
The profile's [commands] table says which commands exist on the module and which
variant of each (the code holds the union of behaviours; the profile chooses).
A command's test form ("AT+X=?") is declared with it: `@command("+X", WRITE,
test="+X: (0-5)")` (or a function of the modem for ranges from the profile).
A command without a test form answers OK to `=?` (V.250 habit).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from emulator.at.parser import EXEC, READ, TEST, WRITE

ANY_VARIANT = "*"
KINDS = (TEST, READ, WRITE, EXEC)


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str
    variant: str
    func: Callable


class CommandTable:
    def __init__(self) -> None:
        self._entries: dict[tuple[str, str, str], Entry] = {}

    def command(self, name: str, *kinds: str, variant: str = ANY_VARIANT,
                test: str | list[str] | Callable | None = None) -> Callable:
        """Register a handler for `kinds` of `name`.  test: the command's test form
        ("AT+X=?") declared with it: a line, a list of lines, or modem -> line(s)
        for ranges that come from the profile; answered with OK."""
        name = name.upper()
        for kind in kinds:
            if kind not in KINDS:
                raise ValueError(f"unknown command kind {kind!r}")
        if test is not None:
            self._add(name, TEST, variant, _test_form(test))

        def register(func: Callable) -> Callable:
            for kind in kinds:
                self._add(name, kind, variant, func)
            return func
        return register

    def _add(self, name: str, kind: str, variant: str, func: Callable) -> None:
        key = (name, kind, variant)
        if key in self._entries:
            raise ValueError(f"{name} {kind} ({variant}) registered twice")
        self._entries[key] = Entry(name, kind, variant, func)

    def lookup(self, name: str, kind: str, variant: str) -> Entry | None:
        return (self._entries.get((name, kind, variant))
                or self._entries.get((name, kind, ANY_VARIANT)))

    def knows(self, name: str, variant: str = ANY_VARIANT) -> bool:
        return any(n == name and v in (variant, ANY_VARIANT) for n, _, v in self._entries)

    def variants(self, name: str) -> set[str]:
        return {v for n, _, v in self._entries if n == name}


def refusing(func: Callable) -> Callable:
    """Mark a handler registered only to refuse a form the module lacks (ERROR with
    its reason): the command surface in README.md does not list such forms."""
    func.refuses = True
    return func


def refuses(func: Callable) -> bool:
    return getattr(func, "refuses", False)


TABLE = CommandTable()
command = TABLE.command


def _test_form(test: str | list[str] | Callable) -> Callable:
    from emulator.at.responses import ok

    def answer(modem, cmd):
        lines = test(modem) if callable(test) else test
        return ok(*([lines] if isinstance(lines, str) else lines))
    return answer
