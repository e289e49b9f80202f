"""Reading what the modem says when there is no single pattern to wait for (ATQ1, ATV0,
S3/S4 framing, URCs in no fixed order) and what comes is exactly what is under test.  A
fixed window (quiet_for(0.3)) is not enough on a loaded machine (CI: a shared 2-core VM):
the emulator may take longer than that to answer.  So wait until what was read is complete
(up to `timeout` s), then keep listening `settle` s for anything more: a longer answer
still fails the caller's check, a shorter one fails after `timeout` s."""
from __future__ import annotations

import time


def collect(host, complete, settle: float = 0.3, timeout: float = 10) -> bytes:
    """Everything the modem says until complete(bytes read so far) is true (or `timeout`
    s passed), and whatever more comes in the `settle` s after."""
    out = b""
    deadline = time.monotonic() + timeout
    while not complete(out) and time.monotonic() < deadline:
        out += host.quiet_for(0.02)
    return out + host.quiet_for(settle)


def answer_is(host, expected: bytes, settle: float = 0.3, timeout: float = 10) -> bytes:
    """Assert that everything the modem says is `expected`: at least len(expected) bytes
    (waited for up to `timeout` s), and nothing more in the `settle` s after them."""
    out = collect(host, lambda got: len(got) >= len(expected), settle, timeout)
    assert out == expected, f"{out!r} != {expected!r}"
    return out
