"""Typed access to a command's parameters.  Every malformed value raises
CommandError, which the interpreter answers with ERROR / +CME ERROR: a handler
never has to guard against bad input itself."""
from __future__ import annotations

from emulator.at.parser import Arg, Command
from emulator.at.responses import CommandError, Final

_MISSING = object()


class Args:
    def __init__(self, cmd: Command, error: Final = "ERROR", at_most: int | None = None) -> None:
        """at_most: more parameters than this are refused at once."""
        self.cmd = cmd
        self.values = list(cmd.args)
        self.error = error            # what a bad parameter answers (ERROR or a Cme)
        if at_most is not None:
            self.at_most(at_most)

    def __len__(self) -> int:
        return len(self.values)

    def present(self, i: int) -> bool:
        return i < len(self.values) and self.values[i] is not None

    def fail(self, why: str) -> CommandError:
        return CommandError(self.error, f"{self.cmd.raw}: {why}")

    def at_most(self, n: int) -> None:
        if len(self.values) > n:
            raise self.fail(f"at most {n} parameters")

    def _get(self, i: int, default) -> Arg | None:
        values = self.values
        arg = values[i] if i < len(values) else None     # (present(i), inline: every parameter asks)
        if arg is not None:
            return arg
        if default is _MISSING:
            raise self.fail(f"parameter {i + 1} missing")
        return None

    def int(self, i: int, lo: int, hi: int, default=_MISSING) -> int:
        arg = self._get(i, default)
        if arg is None:
            return default
        if arg.quoted:
            raise self.fail(f"parameter {i + 1} must be a number")
        return self.parse_int(arg.text, lo, hi, i)

    def parse_int(self, text: str, lo: int, hi: int, i: int = 0) -> int:
        if text.isascii() and text.isdigit() and len(text) <= 12:
            value = int(text)           # (the common case, what the checks below let through)
            if lo <= value <= hi:
                return value
            raise self.fail(f"parameter {i + 1} {value} not in {lo}-{hi}")
        text = text.strip(" ")        # (not str.strip(): a no-break space is no space)
        # ASCII digits only, a minus sign only where the range has negative values (no
        # module takes "+1" or "-0" for 1 or 0); "²".isdigit() is True, hence isascii().
        digits = text[1:] if text[:1] == "-" and lo < 0 else text
        if not digits or not digits.isascii() or not digits.isdigit():
            raise self.fail(f"parameter {i + 1} {text!r} is not a number")
        if len(text) > 12:
            raise self.fail(f"parameter {i + 1} out of range")
        value = int(text)
        if not lo <= value <= hi:
            raise self.fail(f"parameter {i + 1} {value} not in {lo}-{hi}")
        return value

    def str(self, i: int, default=_MISSING, max_len: int = 255, quoted: bool = False) -> str:
        """A string parameter; quotes are optional unless quoted=True."""
        arg = self._get(i, default)
        if arg is None:
            return default
        if quoted and not arg.quoted:
            raise self.fail(f"parameter {i + 1} must be quoted")
        if len(arg.text) > max_len:
            raise self.fail(f"parameter {i + 1} longer than {max_len}")
        return arg.text

    def raw(self, i: int) -> Arg | None:
        return self.values[i] if i < len(self.values) else None
