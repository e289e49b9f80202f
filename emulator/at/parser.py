"""Splits the body of a command line (what follows "AT") into commands.

Extended commands (`+X`, `$X`, `&X`...): test `+X=?`, read `+X?`, write `+X=<args>`,
execute `+X`.  Several commands may share a line separated by `;`; basic commands
(`E0`, `V1`, `S3=13`, `&F`, `I`) may also be strung together without separators.
Quoted strings are data: commas and semicolons inside them split nothing.
Parsing never raises: malformed input becomes a `Malformed` entry, which the
interpreter answers with ERROR when it reaches it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

TEST, READ, WRITE, EXEC = "test", "read", "write", "exec"

_EXT_PREFIXES = "+$^%#*"
_DIGITS = frozenset("0123456789")      # str.isdigit() also takes "²", which int() refuses
_NAME_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!%-./:_")
# A run of name characters, either case (the latin-1 characters whose upper() is in
# _NAME_CHARS are exactly these).
_NAME_RUN = re.compile(r"[A-Za-z0-9!%\-./:_]*")


@dataclass(frozen=True)
class Arg:
    text: str           # content, without quotes for a quoted string
    quoted: bool = False

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Command:
    name: str                       # upper case: "+QSSLCFG", "E", "S3", "&F", "I"
    kind: str                       # TEST / READ / WRITE / EXEC
    args: tuple[Arg | None, ...] = field(default=())   # None = omitted parameter
    raw: str = ""


@dataclass(frozen=True)
class Malformed:
    raw: str
    reason: str


# Host drivers send the same few lines over and over (AT+QSSLSEND=0,1460 per packet):
# parsing is pure and its results are frozen, so a line parsed once is not parsed again.
_PARSED: dict[bytes, tuple[Command | Malformed, ...]] = {}
_PARSED_MAX = 256                  # distinct lines kept (then the table starts again)
_PARSED_LINE_MAX = 128             # longer lines (certificates, payloads) are not kept


def parse_line(body: bytes) -> list[Command | Malformed]:
    body = bytes(body)
    known = _PARSED.get(body)
    if known is not None:
        return list(known)
    out = _parse_line(body)
    if len(body) <= _PARSED_LINE_MAX:
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        _PARSED[body] = tuple(out)
    return out


def _parse_line(body: bytes) -> list[Command | Malformed]:
    # latin-1 maps every byte to one char, so any input decodes and round-trips.
    text = _without_spaces(body.decode("latin-1"))
    out: list[Command | Malformed] = []
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == " ":
            i += 1
            continue
        if c == ";":
            i += 1
            continue
        if c in _EXT_PREFIXES:
            i = _parse_extended(text, i, out)
        elif c == "&":
            i = _parse_basic(text, i + 1, out, prefix="&")
        else:
            i = _parse_basic(text, i, out, prefix="")
        if out and isinstance(out[-1], Malformed):
            break
    return out


def _without_spaces(text: str) -> str:
    """V.250 5.1 asks that spaces be ignored: here the spaces (0x20) outside string constants
    next to the syntax -- around '=', '?', ',', ';' and at the ends of the line or of a quoted
    piece -- go: "AT+CMEE =1", "ATS3 ?", "AT+QIOPEN=1, 0" are AT+CMEE=1, ATS3?, AT+QIOPEN=1,0.
    A space inside a name or a value stays: an unquoted string keeps it (an APN, a file name,
    a password are the host's, never joined), a number with it is malformed ("443 1" is
    ERROR, never port 4431).  Only 0x20: a no-break space or a control character is no space."""
    if " " not in text:
        return text
    parts = text.split('"')
    for k in range(0, len(parts), 2):          # outside quotes: the even pieces
        parts[k] = _SPACES.sub("", parts[k])
    return '"'.join(parts)


_SPACES = re.compile(r"^ +| +$|(?<=[=?,;]) +| +(?=[=?,;])")


def _parse_extended(text: str, start: int, out: list) -> int:
    i = _NAME_RUN.match(text, start + 1).end()
    n = len(text)
    name = text[start:i].upper()
    if len(name) < 2:
        out.append(Malformed(text[start:], "empty command name"))
        return n
    for suffix, kind in (("=?", TEST), ("?", READ)):      # "=?" before "=" and "?"
        if text.startswith(suffix, i):
            end = _skip_to_separator(text, i + len(suffix))
            if text[i + len(suffix):end].strip(" "):
                out.append(Malformed(text[start:end], f"text after {suffix}"))
                return n
            out.append(Command(name, kind, (), text[start:end]))
            return end
    if text.startswith("=", i):
        end = _skip_to_separator(text, i + 1)
        args = split_args(text[i + 1:end])
        if args is None:
            out.append(Malformed(text[start:end], "malformed parameter list"))
            return n
        out.append(Command(name, WRITE, tuple(args), text[start:end]))
        return end
    end = _skip_to_separator(text, i)
    if text[i:end].strip(" "):
        out.append(Malformed(text[start:end], "unexpected text after command name"))
        return n
    out.append(Command(name, EXEC, (), text[start:end]))
    return end


def _skip_to_separator(text: str, i: int) -> int:
    """Index of the next ';' outside quotes (or end of text)."""
    semicolon = text.find(";", i)
    quote = text.find('"', i)
    if quote < 0 or 0 <= semicolon < quote:      # no quote before it: that ';' is outside
        return len(text) if semicolon < 0 else semicolon
    quoted = False
    while i < len(text):
        c = text[i]
        if c == '"':
            quoted = not quoted
        elif c == ";" and not quoted:
            return i
        i += 1
    return i


def split_args(text: str) -> list[Arg | None] | None:
    """Comma-separated parameters; None for an omitted one.  Returns None for a
    malformed list (a quote left open, text after a closing quote, a quote inside an
    unquoted value)."""
    args: list[Arg | None] = []
    i, n = 0, len(text)
    if not text.strip(" "):
        return [None]
    while True:
        while i < n and text[i] == " ":
            i += 1
        if i < n and text[i] == '"':
            end = text.find('"', i + 1)
            if end < 0:
                return None
            value = Arg(text[i + 1:end], quoted=True)
            i = end + 1
            while i < n and text[i] == " ":
                i += 1
            if i < n and text[i] != ",":
                return None            # text after a closing quote: "abc"def
        else:
            comma = text.find(",", i)
            comma = n if comma < 0 else comma
            raw = text[i:comma].strip(" ")
            if '"' in raw:
                return None            # a stray quote in an unquoted value: abc"
            value = Arg(raw) if raw else None
            i = comma
        args.append(value)
        if i >= n:
            return args
        i += 1  # skip the comma


def _parse_basic(text: str, i: int, out: list, prefix: str) -> int:
    n = len(text)
    if i >= n:
        out.append(Malformed(text, "dangling &"))
        return n
    letter = text[i].upper()
    if not "A" <= letter <= "Z":
        out.append(Malformed(text[i:], f"unexpected character {text[i]!r}"))
        return n
    start = i - len(prefix)
    i += 1
    if letter == "S" and not prefix:
        j = i
        while j < n and text[j] in _DIGITS:
            j += 1
        if j == i:
            out.append(Malformed(text[start:], "S without register number"))
            return n
        name = "S" + str(int(text[i:j]))
        end = _basic_query(name, text, start, j, out)
        if end is not None:
            return end
        if text.startswith("=", j):
            k = j + 1
            while k < n and text[k] in _DIGITS:
                k += 1
            value = text[j + 1:k]
            if _split_number(text, k):
                out.append(Malformed(text[start:], "a space inside the number"))
                return n
            if stray := _stray(text, k):
                out.append(Malformed(text[start:], f"unexpected character {stray!r} after it"))
                return n
            out.append(Command(name, WRITE, (Arg(value) if value else None,), text[start:k]))
            return k
        out.append(Malformed(text[start:j], "S register needs ? or ="))
        return n
    j = i
    while j < n and text[j] in _DIGITS:
        j += 1
    value = text[i:j]
    name = prefix + letter
    if _split_number(text, j):                # "ATE1 0", "ATE 0": not E then a stray number
        out.append(Malformed(text[start:], "a space inside the number"))
        return n
    if stray := _stray(text, j):              # "ATE<TAB>1": not E (E0) and then an error
        out.append(Malformed(text[start:], f"unexpected character {stray!r} after it"))
        return n
    end = _basic_query(name, text, start, j, out)
    if end is not None:
        return end
    args = (Arg(value),) if value else ()
    out.append(Command(name, EXEC, args, text[start:j]))
    return j


def _stray(text: str, k: int) -> str:
    """A character that can start nothing follows a basic command at k, after any spaces
    (V.250 5.1 ignores them: "ATE0 <NUL>" is "ATE0<NUL>"): a control character, TAB included,
    or one past ASCII.  The command is malformed and runs nothing, as with a space inside its
    number -- not the bare command (its default 0) and then an error.  Returns it, or ""."""
    while k < len(text) and text[k] == " ":
        k += 1
    return text[k] if k < len(text) and not " " <= text[k] <= "~" else ""


def _split_number(text: str, k: int) -> bool:
    """A basic command's digits end at k and more digits follow after spaces ("ATS3=1 3",
    "ATE1 0"): one malformed number, not a value and another command."""
    rest = text[k:].lstrip(" ")                  # (any run of spaces, as _stray skips)
    return len(rest) < len(text) - k and rest[:1] in _DIGITS and rest[:1] != ""


def _basic_query(name: str, text: str, start: int, j: int, out: list) -> int | None:
    """"=?" or "?" right after a basic command's name (ATS3?, ATE=?): where it ends."""
    for suffix, kind in (("=?", TEST), ("?", READ)):
        if text.startswith(suffix, j):
            if stray := _stray(text, j + len(suffix)):   # "ATS3?<NUL>": runs nothing
                out.append(Malformed(text[start:], f"unexpected character {stray!r} after it"))
                return len(text)
            out.append(Command(name, kind, (), text[start:j + len(suffix)]))
            return j + len(suffix)
    return None
