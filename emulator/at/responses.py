"""What a handler returns: a response as a value (Renode style), never bytes
written to the port.  The interpreter frames it according to ATV/ATQ/CMEE
(emulator/at/framing.py is the only place that turns these values into bytes)."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Awaitable, Callable, Protocol, Union

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
    """Bytes written verbatim inside a response (received data), then CR LF (crlf=False:
    nothing after them -- AT+QFREAD's data run straight into the final result)."""
    data: bytes
    crlf: bool = True


@dataclass(frozen=True)
class Code:
    """A V.250 result code among a response's lines (the CONNECT before AT+QFDWL's
    data): "CONNECT" in ATV1, "1<CR>" in ATV0 (no CR LF: the data follow at once),
    nothing with ATQ1.  name is a key of RESULT_CODES; detail follows the name after a
    space in ATV1 (AT+QFREAD's "CONNECT <read_length>"), ATV0 shows the number alone."""
    name: str
    detail: str = ""


CONNECT = Code("CONNECT")

Line = Union[str, Raw, Code]
Final = Union[str, Cme, Text, None]   # str = a key of RESULT_CODES; None = no final yet


class Prompt(Enum):
    """How the port announces that it takes data now (DataRequest.prompt)."""
    DATA = "> "            # information text: "\r\n> " in ATV1, "> " in ATV0 (ATQ1 keeps it)
    CONNECT = "CONNECT"    # a result code: "\r\nCONNECT\r\n" in ATV1, "1\r" in ATV0, none in ATQ1


@dataclass
class DataRequest:
    """After the response's lines, the port leaves command state and collects
    raw bytes for the handler (the "> " of AT+QSSLSEND, CONNECT of AT+QFUPL).

    prompt: a Prompt the interpreter frames, or None (nothing is written).
    length: collect exactly this many bytes; None = until Ctrl+Z.
    max_length: in Ctrl+Z mode, bytes beyond this are dropped and on_done gets
    reason "overflow".
    escape_cancels: ESC (0x1B) ends collection and cancels (only when length is None).
    idle_timeout: seconds without a byte -> on_done(<bytes so far>, "timeout")
    (an inactivity timer on the modem's clock: every byte that arrives restarts it).
    echo: with ATE1 the data are echoed ("> " prompts); False for CONNECT data
    mode, where V.250 echo (a command-state feature) does not apply.
    ack_block: after every ack_block bytes but the last the port writes "A" and the
    host sends the next block (AT+QFUPL's ack mode); only with a length.
    plus_escape: "+++" with the S12 guard times (as in online data mode) ends the
    collection, the three "+" not counted (AT+QFUPL); only with a length.  "+++" that
    completes the length is data.
    on_done(data, reason) -> Response: data is what was collected;
    reason is "done", "cancel", "timeout", "overflow" or "escape".
    """
    on_done: Callable[[bytes, str], "Response"]
    prompt: Prompt | None = Prompt.DATA
    length: int | None = None
    max_length: int | None = None
    escape_cancels: bool = True
    idle_timeout: float | None = None
    echo: bool = True
    ack_block: int | None = None
    plus_escape: bool = False


class OnlineLink(Protocol):
    """What the port talks to in online data mode (transparent access): a connection.

    The interpreter calls these; the connection calls interpreter.leave_online() when it
    ends (the peer closed, the network failed) and writes the peer's bytes to the port
    itself (modem.write) while it is the port's online link."""

    def started(self) -> None:
        """CONNECT is out: the port is this link's now (deliver what waited)."""

    def send(self, data: bytes, arrived: float | None = None) -> None:
        """The host's bytes, unchanged, into the connection.  arrived: when they came from
        the host (the modem's monotonic clock), if not now -- "+"s the escape detector held
        until their guard time told they were data."""

    def escaped(self) -> None:
        """The host left with "+++" or a DTR drop (AT&D1): the connection stays open and
        the peer's bytes wait until the port comes back (ATO, AT+QISWTMD)."""

    def hang_up(self) -> None:
        """A DTR drop with AT&D2: close the connection."""

    def resume(self) -> bool:
        """ATO after the link left online mode: True when its connection can take the port
        again (CONNECT follows), False when it is gone (NO CARRIER)."""

    # Optional: power_lost() -- the module restarts in online mode (before escaped()): what
    # the link still holds for the connection is never sent.


@dataclass
class Response:
    lines: list[Line] = field(default_factory=list)
    final: Final = "OK"
    data: DataRequest | None = None          # enter data collection after the lines
    pending: Awaitable["Response"] | None = None   # finish later (the port stays busy)
    after: list[str] = field(default_factory=list)  # URC-like lines right after the final
    online: OnlineLink | None = None         # CONNECT, then online data mode with this link
    # Work the answer does not wait for, run right after its final result is written
    # (before the lines after it and the URCs that waited, so what it raises comes after
    # them as if the handler had done it): the host reads SEND OK while the module is
    # still encrypting and sending.  Only with a final result.
    then: Callable[[], None] | None = None
    # The line ends with this answer: the commands after it on the line do not run, and
    # `then` runs after the final even when it is OK (a reboot: OK, framed with the
    # settings it was asked with, then the module restarts).
    ends_line: bool = False
    # The lines go out as the host reads them, a piece whenever little output waits (a
    # long answer: AT+QFDWL's file), the port busy until the final result; a hang-up
    # ends them (the rest is not for the next host).  Short ones are written at once.
    paced: bool = False


def ok(*lines: Line) -> Response:
    return Response(list(lines), "OK")


class CommandError(Exception):
    """Raised by handlers and argument helpers; becomes ERROR or +CME ERROR."""

    def __init__(self, final: Final = "ERROR", log: str = "") -> None:
        super().__init__(log or str(final))
        self.final = final
        self.log = log


def cme_code(exc: BaseException) -> int | None:
    """The +CME ERROR code an exception carries, or None.

    Any exception with an int attribute `cme` (the storage errors: FileError,
    SecStoreError) that escapes a handler is answered "+CME ERROR: <cme>" by the
    interpreter, so a handler lets them through instead of converting them."""
    code = getattr(exc, "cme", None)
    return code if isinstance(code, int) and not isinstance(code, bool) else None
