"""AT+QICFG: the optional TCP/IP parameters of a Quectel EC2x (sans-IO, one per modem).

The catalogue is the EG25-G's own AT+QICFG=? answer (lukejenkins/cwd outputs.md, firmware
EG25GGBR07A08M2G_01.003.01.003): each option's name, its parameters' ranges and the test
form's text.  Defaults: the BG95 TCP/IP note's (transpktsize 1024, transwaittm 2) and the
formats AT+QIRD has without AT+QICFG; the rest as a public EC25 driver's "default
configuration" (ghuvrons/quectel-ec25) writes them.  The settings are not saved ("The
configuration is not saved", BG95 and EC200U notes): a restart brings the defaults back.

What each one does in the emulator (docs/behaviour.md, "TCP/IP"):
    dataformat <send>,<recv>  1 = hex: AT+QISEND's data are hex digits, AT+QIRD answers in hex
    viewmode                  1 = "+QIRD: <header>,<data>" on one line
    recvind                   1 = the buffer-mode URC carries the length: +QIURC: "recv",<id>,<n>
    transpktsize, transwaittm transparent mode (AT+QIOPEN's sockets) sends the host's bytes in
                              packets of transpktsize; fewer wait transwaittm x 100 ms (0: at once)
    the others                stored and read back only
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Option:
    name: str
    ranges: tuple[tuple[int, int], ...]   # each parameter's (lowest, highest)
    test: str                             # its part of the test form, after the name
    default: tuple[int, ...]
    required: int = 0                     # parameters a write needs (0: all of them)

    def parse(self, values: list[int]) -> tuple[int, ...] | None:
        """The values a write sets, or None when they are refused."""
        need = self.required or len(self.ranges)
        if not need <= len(values) <= len(self.ranges):
            return None
        if any(not lo <= v <= hi for v, (lo, hi) in zip(values, self.ranges)):
            return None
        return tuple(values)


# The order is the test form's.
OPTIONS: tuple[Option, ...] = (
    Option("transpktsize", ((1, 1460),), "(1-1460)", (1024,)),
    Option("transwaittm", ((0, 20),), "(0-20)", (2,)),
    Option("dataformat", ((0, 1), (0, 1)), "(0,1),(0,1)", (0, 0)),
    Option("viewmode", ((0, 1),), "(0,1)", (0,)),
    Option("tcp/retranscfg", ((3, 20), (5, 1000)), "(3-20),(5-1000)", (12, 600)),
    Option("dns/cache", ((0, 1),), "(0,1)", (1,)),
    Option("qisend/timeout", ((0, 3600),), "(0-3600)", (0,)),
    Option("passiveclosed", ((0, 1),), "(0,1)", (0,)),
    Option("udp/readmode", ((0, 1),), "(0,1)", (0,)),
    Option("udp/sendmode", ((0, 1),), "(0,1)", (0,)),
    Option("tcp/accept", ((0, 1),), "(0,1)", (1,)),
    Option("recvind", ((0, 1),), "(0,1)", (0,)),
    # Disabled, the times need not follow ("tcp/keepalive",0); enabled, all four.
    Option("tcp/keepalive", ((0, 1), (1, 120), (25, 100), (3, 10)), "(0,1),(1-120),(25-100),(3-10)",
           (0,), required=1),
    Option("recv/buffersize", ((10240, 524288),), "(10240-524288)", (10240,)),
    Option("window/scale", ((0, 1),), "(0-1)", (0,)),
)
BY_NAME = {o.name: o for o in OPTIONS}


class QicfgSettings:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.values: dict[str, tuple[int, ...]] = {o.name: o.default for o in OPTIONS}

    def test_lines(self) -> list[str]:
        return [f'+QICFG: "{o.name}",{o.test}' for o in OPTIONS]

    def read_line(self, name: str) -> str:
        return f'+QICFG: "{name}",' + ",".join(map(str, self.values[name]))

    def write(self, name: str, values: list[int]) -> bool:
        """Set an option; False (nothing changes) when the values are refused."""
        option = BY_NAME[name]
        parsed = option.parse(values)
        if parsed is None or (name == "tcp/keepalive" and parsed[0] == 1 and len(parsed) < 4):
            return False
        self.values[name] = parsed
        return True

    # -- what the other commands ask --------------------------------------------------
    @property
    def send_hex(self) -> bool:
        return self.values["dataformat"][0] == 1

    @property
    def recv_hex(self) -> bool:
        return self.values["dataformat"][1] == 1

    @property
    def one_line(self) -> bool:
        return self.values["viewmode"][0] == 1

    @property
    def recv_length_in_urc(self) -> bool:
        return self.values["recvind"][0] == 1

    @property
    def transparent_packets(self) -> tuple[int, float]:
        """Transparent mode's packet size (bytes) and how long fewer bytes wait (seconds)."""
        return self.values["transpktsize"][0], self.values["transwaittm"][0] / 10
