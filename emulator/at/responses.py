"""What a handler returns: a response as a value (Renode style), never bytes
written to the port.  The interpreter frames it according to ATV/ATQ/CMEE."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Awaitable, Callable, Union

# V.250 result codes and their ATV0 numbers.
RESULT_CODES = {"OK": 0, "CONNECT": 1, "RING": 2, "NO CARRIER": 3, "ERROR": 4,
                "NO DIALTONE": 6, "BUSY": 7, "NO ANSWER": 8}


@dataclass(frozen=True)
class Cme:
    """+CME ERROR: <code>; shown as ERROR, numeric or text according to AT+CMEE."""
    code: int


@dataclass(frozen=True)
class Text:
    """A final line that is not a V.250 result code (SEND OK, SEND FAIL, ...):
    always printed as text, suppressed by neither ATV0 nor ATQ1."""
    text: str


@dataclass(frozen=True)
class Raw:
    """Bytes written verbatim inside a response (received data), then CR LF."""
    data: bytes


Final = Union[str, Cme, Text, None]   # str = a key of RESULT_CODES; None = no final yet


@dataclass
class DataRequest:
    """After the response's lines, the port leaves command state and collects
    raw bytes for the handler (the "> " of AT+QSSLSEND, CONNECT of AT+QFUPL).

    length: collect exactly this many bytes; None = until Ctrl+Z.
    max_length: in Ctrl+Z mode, bytes beyond this are dropped and on_done gets
    reason "overflow".
    escape_cancels: ESC (0x1B) ends collection and cancels (only when length is None).
    timeout: seconds without completion -> on_done(<bytes so far>, "timeout").
    echo: with ATE1 the data are echoed ("> " prompts); False for CONNECT data
    mode, where V.250 echo (a command-state feature) does not apply.
    on_done(data, reason) -> Response: data is what was collected;
    reason is "done", "cancel", "timeout" or "overflow".
    """
    on_done: Callable[[bytes | None, str], "Response"]
    prompt: bytes = b"> "
    length: int | None = None
    max_length: int | None = None
    escape_cancels: bool = True
    timeout: float | None = None
    echo: bool = True


@dataclass
class Response:
    lines: list[Union[str, Raw]] = field(default_factory=list)
    final: Final = "OK"
    data: DataRequest | None = None          # enter data collection after the lines
    pending: Awaitable["Response"] | None = None   # finish later (the port stays busy)
    after: list[str] = field(default_factory=list)  # URC-like lines right after the final


def ok(*lines: Union[str, Raw]) -> Response:
    return Response(list(lines), "OK")


class CommandError(Exception):
    """Raised by handlers and argument helpers; becomes ERROR or +CME ERROR."""

    def __init__(self, final: Final = "ERROR", log: str = "") -> None:
        super().__init__(log or str(final))
        self.final = final
        self.log = log
