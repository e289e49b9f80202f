"""Log lines the host cannot forge and that carry no secrets.

Everything the host sends may end up in a log message (a rejected command line, a
host name, a file name).  A host name containing LF must not start a new log line
and an ESC must not repaint the reader's terminal, so every string argument of a
log call is escaped (printable ASCII stays, anything else becomes \\xNN / \\uNNNN).
Key material never reaches a log: command lines that carry it (AT+QSSLCFG="psk", a
"clientkey" with its <key_pwd>)
are shown with those parameters replaced by "<redacted>".

    log = get_logger("emulator.ssl")       # instead of logging.getLogger
"""
from __future__ import annotations

import logging
import re

_UNSAFE = re.compile(r"[^\x20-\x7e]")


def escape(text: str) -> str:
    """Printable ASCII kept; every other character as a Python-style escape."""
    def one(m: re.Match) -> str:
        c = ord(m.group(0))
        return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}" if c < 0x10000 else f"\\U{c:08x}"
    return _UNSAFE.sub(one, text)


# Commands whose parameters from the given index on are secrets:
# AT+QSSLCFG="psk",<ctx>,<identity>,<key> keeps "psk" and <ctx>;
# AT+QSSLCFG="clientkey",<ctx>,<path>,<key_pwd> keeps the path.
_SECRET_FORMS = [(re.compile(r'^\s*\+QSSLCFG\s*=\s*"?\s*psk\s*"?\s*,', re.IGNORECASE), 2),
                 (re.compile(r'^\s*\+QSSLCFG\s*=\s*"?\s*clientkey\s*"?\s*,', re.IGNORECASE), 3)]


def redact(raw: str) -> str:
    """A command (as typed, without "AT") with its secret parameters replaced."""
    for pattern, keep in _SECRET_FORMS:
        if pattern.match(raw):
            head = raw.split("=", 1)[0]
            params = _split_params(raw.split("=", 1)[1])
            shown = params[:keep] + (["<redacted>"] if len(params) > keep else [])
            return f"{head}={','.join(shown)}"
    return raw


def _split_params(text: str) -> list[str]:
    out, cur, quoted = [], [], False
    for c in text:
        if c == '"':
            quoted = not quoted
        if c == "," and not quoted:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    out.append("".join(cur))
    return out


def loggable(raw: str) -> str:
    """How a command the host sent appears in a log line."""
    return escape(redact(raw))


class SafeLogger(logging.LoggerAdapter):
    """A logger whose str/bytes arguments are escaped before formatting."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__(logger, {})

    def log(self, level, msg, *args, **kwargs):      # every level helper ends here
        if self.isEnabledFor(level):
            msg, kwargs = self.process(msg, kwargs)
            kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + 1    # the caller, not this frame
            self.logger.log(level, msg, *(_safe(a) for a in args), **kwargs)

    def process(self, msg, kwargs):
        return msg, kwargs


def _safe(arg):
    """str and exceptions escaped; bytes already print as their (escaped) repr."""
    if isinstance(arg, str):
        return escape(arg)
    if isinstance(arg, BaseException):
        return escape(str(arg))
    return arg


def get_logger(name: str) -> SafeLogger:
    return SafeLogger(logging.getLogger(name))
