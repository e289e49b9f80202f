"""The one table of AT command handlers.

A handler declares what it answers with `@command("+QSSLCFG", WRITE, variant="ec2x")`.
The profile's [commands] table says which commands exist on the module and which
variant of each (the code holds the union of behaviours; the profile chooses).
A command without a registered test form answers OK to `=?` (V.250 habit).
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

    def command(self, name: str, *kinds: str, variant: str = ANY_VARIANT) -> Callable:
        name = name.upper()
        for kind in kinds:
            if kind not in KINDS:
                raise ValueError(f"unknown command kind {kind!r}")

        def register(func: Callable) -> Callable:
            for kind in kinds:
                key = (name, kind, variant)
                if key in self._entries:
                    raise ValueError(f"{name} {kind} ({variant}) registered twice")
                self._entries[key] = Entry(name, kind, variant, func)
            return func
        return register

    def lookup(self, name: str, kind: str, variant: str) -> Entry | None:
        return (self._entries.get((name, kind, variant))
                or self._entries.get((name, kind, ANY_VARIANT)))

    def knows(self, name: str, variant: str = ANY_VARIANT) -> bool:
        return any(n == name and v in (variant, ANY_VARIANT) for n, _, v in self._entries)

    def names(self) -> set[str]:
        return {n for n, _, _ in self._entries}

    def variants(self, name: str) -> set[str]:
        return {v for n, _, v in self._entries if n == name}


TABLE = CommandTable()
command = TABLE.command
