"""Response values -> bytes on the port: the only place that knows V.250 framing.

ATV1 (verbose): information text "<CR><LF>text<CR><LF>", results "<CR><LF>OK<CR><LF>".
ATV0: information text "text<CR><LF>", result codes as digits and "<CR>" ("0<CR>").
<CR> is S3 and <LF> is S4 (V.250 6.2.1/6.2.2: ATS3=35 makes every answer, its own OK
included, "#\nOK#\n"), as the Quectel manuals describe both registers.
ATQ1 suppresses result codes (and +CME ERROR), never information text or URCs.
AT+CMEE: 0 a +CME error is a plain ERROR, 1 its number, 2 its text (emulator/at/cme.py).
Pure functions of the value and the port settings: the interpreter writes what
they return (h11 keeps its serialisation in one module the same way).
"""
from __future__ import annotations

from emulator.at.cme import cme_text
from emulator.at.responses import RESULT_CODES, Cme, Code, Final, Line, Prompt, Raw, Text

ACK = b"A"        # AT+QFUPL ack mode: after each block, no CR LF


def _ends(settings) -> tuple[bytes, bytes]:
    """(<CR>, <LF>): S3 and S4."""
    sreg = settings.sreg
    return bytes((sreg.get(3, 13),)), bytes((sreg.get(4, 10),))


def lines(items: list[Line], settings) -> bytes:
    """Information text: the lines of a response, each ended with CR LF."""
    if not items:
        return b""
    cr, lf = _ends(settings)
    out = bytearray(cr + lf if settings.verbose else b"")
    for item in items:
        if isinstance(item, Code):
            if not settings.quiet:
                text = f"{item.name} {item.detail}" if item.detail else item.name
                out += (text.encode() + cr + lf if settings.verbose
                        else str(RESULT_CODES[item.name]).encode() + cr)
            continue
        if isinstance(item, Raw):
            out += item.data + cr + lf if item.crlf else item.data
            continue
        out += item.encode("latin-1")
        out += cr + lf
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
        return str(RESULT_CODES[result]).encode() + _ends(settings)[0]
    return _line(result, settings)


def prompt(kind: Prompt | None, settings) -> bytes:
    """What a DataRequest writes before the data (None: nothing)."""
    if kind is Prompt.DATA:
        cr, lf = _ends(settings)
        return cr + lf + b"> " if settings.verbose else b"> "
    if kind is Prompt.CONNECT:
        return final("CONNECT", settings)
    return b""


def urc(text: str | bytes, raw: bytes, settings) -> bytes:
    """An unsolicited line, then optional raw bytes (direct push data) and their line end:
    a push URC is a line, its data, CR LF (docs/behaviour.md)."""
    body = text.encode("latin-1") if isinstance(text, str) else text
    cr, lf = _ends(settings)
    line = cr + lf + body + cr + lf if settings.verbose else body + cr + lf
    return line + raw + cr + lf if raw else line


def _line(text: str, settings) -> bytes:
    cr, lf = _ends(settings)
    body = text.encode("latin-1")
    return cr + lf + body + cr + lf if settings.verbose else body + cr + lf
