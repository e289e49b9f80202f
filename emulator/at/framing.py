"""Response values -> bytes on the port: the only place that knows V.250 framing.

ATV1 (verbose): information text "<CR><LF>text<CR><LF>", results "<CR><LF>OK<CR><LF>".
ATV0: information text "text<CR><LF>", result codes as digits and "<CR>" ("0<CR>").
ATQ1 suppresses result codes (and +CME ERROR), never information text or URCs.
AT+CMEE: 0 a +CME error is a plain ERROR, 1 its number, 2 its text (emulator/at/cme.py).
Pure functions of the value and the port settings: the interpreter writes what
they return (h11 keeps its serialisation in one module the same way).
"""
from __future__ import annotations

from emulator.at.cme import cme_text
from emulator.at.responses import RESULT_CODES, Cme, Code, Final, Line, Prompt, Raw, Text

ACK = b"A"        # AT+QFUPL ack mode: after each block, no CR LF


def lines(items: list[Line], settings) -> bytes:
    """Information text: the lines of a response, each ended with CR LF."""
    if not items:
        return b""
    out = bytearray(b"\r\n" if settings.verbose else b"")
    for item in items:
        if isinstance(item, Code):
            if not settings.quiet:
                out += (item.name.encode() + b"\r\n" if settings.verbose
                        else f"{RESULT_CODES[item.name]}\r".encode())
            continue
        out += item.data if isinstance(item, Raw) else item.encode("latin-1")
        out += b"\r\n"
    return bytes(out)


def final(result: Final, settings, profile=None) -> bytes:
    """The final result of a command line (None: nothing)."""
    if result is None:
        return b""
    if isinstance(result, Text):
        return _line(result.text, settings)
    if isinstance(result, Cme):
        if settings.quiet:
            return b""
        if settings.cmee == 0:
            result = "ERROR"
        else:
            code = result.code if settings.cmee == 1 else cme_text(result.code, profile)
            return _line(f"+CME ERROR: {code}", settings)
    if settings.quiet:
        return b""
    if not settings.verbose:
        return f"{RESULT_CODES[result]}\r".encode()
    return _line(result, settings)


def prompt(kind: Prompt | None, settings) -> bytes:
    """What a DataRequest writes before the data (None: nothing)."""
    if kind is Prompt.DATA:
        return b"\r\n> " if settings.verbose else b"> "
    if kind is Prompt.CONNECT:
        return final("CONNECT", settings)
    return b""


def urc(text: str | bytes, raw: bytes, settings) -> bytes:
    """An unsolicited line, then optional raw bytes (direct push data)."""
    body = text.encode("latin-1") if isinstance(text, str) else text
    return (b"\r\n" + body + b"\r\n" if settings.verbose else body + b"\r\n") + raw


def _line(text: str, settings) -> bytes:
    return (f"\r\n{text}\r\n" if settings.verbose else f"{text}\r\n").encode("latin-1")
