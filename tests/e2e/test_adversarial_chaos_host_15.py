"""Adversarial: a hostile, impolite host program, round 15 (EC2x and ML302 over the pty) --
a byte-exact model of the command line checked against everything the host throws at it.

Rounds 1-14 (test_adversarial_chaos_host*.py) compared chunkings with each other (round 4),
hunted single control bytes (round 13), abused termios one operation at a time
(test_adversarial_host_termios.py) and closed the port at protocol points.  Here an
independent model (Model below) of docs/behaviour.md's "Command line and result codes" rules
predicts every byte the module writes, and the host is the kind a fuzzer or unknown firmware is:

- hypothesis programs (fixed draws) of lines (`AT`/`at`/`aT` prefixes, `;` chains of
  E/V/Q/&F/+CMEE, S3/S4/S5 set to '#', NUL, LF, ';', '~', DEL..., unknown commands, spaces
  around `;`), each typed with S5 edits (junk -- control and 8-bit bytes too -- typed and
  rubbed out, the prefix's `T` rubbed out and typed again) and ended with S3 (+ LF); `A/`,
  `a/`, `AT<BS>/`; garbage between lines (every byte but `A`/`a`: CR, LF, BS, NUL, 8-bit, `A`
  followed by a non-`T`, `AT` rubbed out to nothing); `;` chains at and just past
  serial.line_max (2048: runs / ERROR with nothing run, A/ skips it);
- written in odd pieces (1-9 bytes, or one byte a write) with random gaps, while the host
  changes its termios between pieces (baud rate, PARENB/PARODD, CS7/CS8, CSTOPB, IXON), sends
  BREAKs (tcsendbreak) and tcdrain()s -- none of which a pty carries (behaviour.md);
- the same programs cut off by a hang-up at a seeded byte (mid-line, between `A` and `/`,
  between CR and LF, inside a 2 KiB chain, after reading a random part of the answers): the
  next program (odd-chunk reader or not) meets exactly the model's state (E/V/Q/CMEE/S3-S5
  and A/'s line, from the whole lines only), no stale byte;
- the same on a UART (--uart, hangup_on_close=False): a program change at a seeded byte is
  invisible -- the next program's bytes finish the half line / `A/` / CR LF / chain;
- 100 KiB of such garbage in random-sized writes under ATE1, with tty changes and breaks
  between them, read in odd chunks, then `AT`: the echo is the garbage byte for byte (LF
  right after CR excepted, behaviour.md) and one OK;
- an SSL socket (buffer mode, Python ssl sink) under the same host: sends (EC2x fixed length,
  ML302 Ctrl+Z / ESC / empty / past 1460) and reads of any length in those lines, A/ opening
  a send's prompt again, data full of framing and editing bytes written in hostile pieces
  once the `> ` came; and the same cut by a hang-up anywhere (inside a prompt's data, after
  its last byte, inside a read's answer): the server gets exactly the completed sends' data,
  every byte it sent is read once, in order.

Every answer is checked byte for byte, every test runs under strict_log (no traceback, no
ERROR record), and `AT` answers afterwards.  No bug found: every byte matched the model.

Noted, not a bug (undocumented, a lexer decision: emulator/at/lexer.py, "overflow"): a line
whose body once passed serial.line_max stays ERROR even when S5 rubs it back under the limit
before its S3 (`AT` + 2100 x `X` + 100 x BS + `+CMEE?` CR: ERROR), as a module's fixed line
buffer that dropped the excess would; the model follows it.
"""
from __future__ import annotations

import random
import re
import termios
import time

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from emulator.testing.host import Host
from tests.e2e.socket_support import OddHost, conn_of, wait_for, wait_received
from tests.e2e.test_adversarial_chaos_host_3 import HOST_IP, Rig

CR, LF, BS = 0x0D, 0x0A, 0x08
LINE_MAX = 2048                     # profile serial.line_max: the body behind "AT"
PROFILES = ["ec2x", "ml302"]
REGS = {3: range(0, 128), 4: range(0, 128), 5: range(0, 128)}     # (V.250 6.2.1-6.2.3)
NO_SHRINK = [Phase.explicit, Phase.generate]     # (a shrink takes minutes on a pty)


# == the model ==================================================================================
class Model:
    """docs/behaviour.md's command line, byte by byte: a line starts at A/a + T/t, S5 (BS)
    deletes the previous character (the prefix's T included, then the A), CR runs it, `A/`
    repeats the last line at once; echo (E1) returns every byte as received except an LF
    right after a CR; V0 results are digit + CR, info text `text CR LF`; Q1 hides results."""

    FACTORY = dict(e=1, v=1, q=0, cmee=1, s5=BS, s3=CR, s4=LF)

    def __init__(self, e=0, v=1, q=0, cmee=1, last=b"", s5=BS) -> None:
        self.e, self.v, self.q, self.cmee, self.last, self.s5 = e, v, q, cmee, last, s5
        self.s3, self.s4 = CR, LF
        self.state = "idle"           # idle | a (saw A) | line | overflow (past LINE_MAX) | data
        self.buf = bytearray()
        self.after_s3 = False

    def hangup(self) -> None:
        """The next program meets command state: a half line is gone, nothing learnt stays."""
        self.state, self.buf, self.after_s3 = "idle", bytearray(), False

    def _nl(self) -> bytes:
        return bytes([self.s3, self.s4])

    def _result(self, ok: bool) -> bytes:
        if self.q:
            return b""
        if self.v:
            return self._nl() + (b"OK" if ok else b"ERROR") + self._nl()
        return (b"0" if ok else b"4") + bytes([self.s3])

    def _info(self, text: bytes) -> bytes:
        return self._nl() + text + self._nl() if self.v else text + self._nl()

    def run(self, body: bytes) -> bytes:
        out = b""
        for raw in body.split(b";"):
            tok = raw.strip(b" ").upper()
            if tok == b"":
                continue
            if tok in (b"E0", b"E1"):
                self.e = tok[1] - 48
            elif tok in (b"V0", b"V1"):
                self.v = tok[1] - 48
            elif tok in (b"Q0", b"Q1"):
                self.q = tok[1] - 48
            elif tok == b"&F":
                self.__dict__.update(self.FACTORY)
            elif tok in (b"+CMEE=0", b"+CMEE=1", b"+CMEE=2"):
                self.cmee = tok[-1] - 48
            elif tok == b"+CMEE?":
                out += self._info(b"+CMEE: %d" % self.cmee)
            elif self.extra(tok) is not None:
                more, go_on = self.extra(tok, run=True)
                out += more
                if not go_on:
                    return out
            elif re.fullmatch(rb"S[345]\?", tok):
                out += self._info(b"%03d" % getattr(self, "s" + chr(tok[1])))
            elif re.fullmatch(rb"S[345]=\d{1,3}", tok) and int(tok[3:]) in REGS[tok[1] - 48]:
                setattr(self, "s" + chr(tok[1]), int(tok[3:]))
            else:
                return out + self._result(False)
        return out + self._result(True)

    def extra(self, tok: bytes, run: bool = False):
        """A subclass's commands: None when tok is not one, else (output, line goes on)."""
        return None

    def data_byte(self, b: int) -> bytes:
        raise AssertionError("no data prompt in this model")

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        for b in data:
            after_s3, self.after_s3 = self.after_s3, False
            if self.state == "data":
                if b == LF and after_s3:              # the LF of the CR LF that opened it
                    continue
                out += self.data_byte(b)
                continue
            if self.e and not (b == LF and after_s3):
                out.append(b)
            if b == self.s3:                          # (S3 first: before S5, before A/)
                self.after_s3 = True
                state, self.state = self.state, "idle"
                if state == "overflow":
                    out += self._result(False)
                elif state == "line":
                    self.last = bytes(self.buf)
                    out += self.run(self.last)
                continue
            if b == LF and after_s3 or self.state == "overflow":
                continue
            if b == self.s5:
                if self.state == "line":
                    if self.buf:
                        del self.buf[-1]
                    else:
                        self.state = "a"
                elif self.state == "a":
                    self.state = "idle"
            elif self.state == "idle":
                if b in b"Aa":
                    self.state = "a"
            elif self.state == "a":
                if b in b"Tt":
                    self.state, self.buf = "line", bytearray()
                elif b == ord("/"):
                    self.state = "idle"
                    out += self.run(self.last)
                elif b not in b"Aa":
                    self.state = "idle"
            elif len(self.buf) >= LINE_MAX:           # its bytes dropped, ERROR at S3
                self.state, self.buf = "overflow", bytearray()
            else:
                self.buf.append(b)
        return bytes(out)


def test_model_sanity():
    m = Model(e=1)
    assert m.feed(b"ATE0;V0\r\nA/AT+CMEE?\rATQ1\rAT+X\r") == b"ATE0;V0\r0\r0\r+CMEE: 1\r\n0\r"
    m = Model(e=1)
    assert m.feed(b"AT\x08\x08\r\nA\x00AT\x08T\r") == b"AT\x08\x08\rA\x00AT\x08T\r\r\nOK\r\n"


class SockModel(Model):
    """Model plus EC2x SSL socket 0 in buffer mode: AT+QSSLSEND=0,<n> (fixed length, 1-1460:
    the rest of its line is dropped, `> ` then n bytes of data, echoed under E1, SEND OK --
    a text, shown under ATQ1 too), AT+QSSLRECV=0,<n> (1-1500) from what the server sent."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.rx = bytearray()          # the server's bytes the module holds
        self.got = bytearray()         # what reads gave the host
        self.sent = bytearray()        # what the host's sends gave the server
        self.remaining = 0
        self.cur = bytearray()         # the data of the prompt under way

    def hangup(self) -> None:
        """A half-entered prompt is abandoned: nothing of it sent (behaviour.md)."""
        super().hangup()
        self.cur.clear()
        self.remaining = 0

    def extra(self, tok: bytes, run: bool = False):
        m = re.fullmatch(rb"\+QSSL(SEND|RECV)=0,(\d{1,5})", tok)
        if not m:
            return None
        if not run:
            return True
        n = int(m.group(2))
        if m.group(1) == b"SEND":
            if not 1 <= n <= 1460:
                return self._result(False), False
            self.state, self.remaining = "data", n
            return (b"\r\n> " if self.v else b"> "), False
        if not 1 <= n <= 1500:
            return self._result(False), False
        k = min(n, len(self.rx))
        data = bytes(self.rx[:k])
        del self.rx[:k]
        self.got += data
        return self._info(b"+QSSLRECV: %d" % k)[:-2] + b"\r\n" + (data + b"\r\n" if k else b""), True

    def data_byte(self, b: int) -> bytes:
        self.cur.append(b)
        self.remaining -= 1
        out = bytes([b]) if self.e else b""
        if not self.remaining:
            self.state = "idle"
            self.sent += self.cur
            self.cur.clear()
            out += b"\r\nSEND OK\r\n" if self.v else b"SEND OK\r\n"
        return out


class Ml302SockModel(SockModel):
    """The ML302's (OneMO SSL manual) socket 0: AT+QSSLSEND=0 (Ctrl+Z ends the data, ESC
    cancels with OK, an empty send or one past 1460 bytes is ERROR; the fixed-length form is
    ERROR), AT+QSSLRECV=1,0,<n> answering `+QSSLRECV: <ip>:443,TCP,<k>` (nothing when empty)."""

    def extra(self, tok: bytes, run: bool = False):
        send = re.fullmatch(rb"\+QSSLSEND=0(,\d+)?", tok)
        recv = re.fullmatch(rb"\+QSSLRECV=1,0,(\d{1,5})", tok)
        if not (send or recv):
            return None
        if not run:
            return True
        if send:
            if send.group(1):
                return self._result(False), False
            self.state, self.remaining = "data", -1
            return (b"\r\n> " if self.v else b"> "), False
        n = int(recv.group(1))
        if not 1 <= n <= 1500:
            return self._result(False), False
        k = min(n, len(self.rx))
        data = bytes(self.rx[:k])
        del self.rx[:k]
        self.got += data
        if not k:
            return b"", True
        return self._info(b"+QSSLRECV: %s:443,TCP,%d" % (HOST_IP.encode(), k)) + data + b"\r\n", True

    def data_byte(self, b: int) -> bytes:
        if b == 0x1B:                                  # ESC: cancelled, OK
            self.state = "idle"
            self.cur.clear()
            return self._result(True)
        if b == 0x1A:
            self.state = "idle"
            data = bytes(self.cur)
            self.cur.clear()
            if not data or len(data) > 1460:
                return self._result(False)
            self.sent += data
            return b"\r\nSEND OK\r\n" if self.v else b"SEND OK\r\n"
        self.cur.append(b)
        return bytes([b]) if self.e else b""


# == what the host types ========================================================================
COMMANDS = [b"", b"E0", b"E1", b"V0", b"V1", b"Q0", b"Q1", b"&F", b"+CMEE?", b"+CMEE=0",
            b"+CMEE=2", b"+CMEE=1", b"S5?", b"+XX", b"e1", b"v0", b"+cmee?", b" Q0 ", b"E2",
            b"S5=0", b"S5=127", b"S5=8", b"s5=8"]
JUNK = bytes(b for b in range(256) if b not in (CR, LF, BS, 0x11, 0x13))
# garbage between lines: no A/a (a line would start), no XON/XOFF (the host's IXON would stop
# its own output on their echo -- the host's doing, not the module's)
GARBAGE = bytes(b for b in range(256) if b not in (0x41, 0x61, 0x11, 0x13))
NOT_T = bytes(b for b in GARBAGE if b not in b"Tt/" and b != BS)

REG_COMMANDS = [b"S3=35", b"S3=13", b"S3=0", b"S3=10", b"S3=59", b"S3=126", b"S4=36", b"S4=10",
                b"S4=13", b"S3?", b"S4?", b"S3=13", b"s4=10", b"S3=128", b"S3=13;S4=10"]
line_st = st.tuples(
    st.sampled_from([b"AT", b"at", b"aT", b"At"]),
    st.lists(st.one_of(st.sampled_from(COMMANDS), st.sampled_from(REG_COMMANDS)), min_size=1, max_size=5),
    st.sampled_from([b"\r", b"\r\n"]),
    st.lists(st.tuples(st.integers(0, 60), st.binary(min_size=1, max_size=4).map(
        lambda j: bytes(JUNK[x % len(JUNK)] for x in j))), max_size=3),
    st.booleans(),                                      # rub out the prefix's T, type it again
).map(lambda t: ("line",) + t)
garbage_st = st.lists(st.one_of(
    st.binary(min_size=1, max_size=6).map(lambda g: bytes(GARBAGE[x % len(GARBAGE)] for x in g)),
    st.integers(0, 255).map(lambda x: b"A" + bytes([NOT_T[x % len(NOT_T)]])),
    st.just(b"AT\x08\x08"), st.just(b"\r\n"), st.just(b"\n"), st.just(b"\r")),
    min_size=1, max_size=4).map(lambda parts: ("raw", b"".join(parts)))
repeat_st = st.sampled_from([("raw", b"A/"), ("raw", b"a/"), ("raw", b"AT\x08/"),   # (S5 8: A/ again)
                             ("raw", b"AT\x08\x08A/"), ("raw", b"A\x08/"), ("raw", b"AT\x00/"),
                             ("raw", b"AT\x7f\x7fa/")])
long_st = st.tuples(st.sampled_from(COMMANDS[:13]), st.integers(LINE_MAX - 1, LINE_MAX + 2)).map(
    lambda t: ("long",) + t)
ops_st = st.lists(st.one_of(line_st, line_st, garbage_st, repeat_st, repeat_st, long_st),
                  min_size=3, max_size=12)


def render(op, model: Model | None = None) -> bytes:
    """The bytes of an op as the host types them, ended and edited with the module's S3 and
    S5 as the model has them now (CR and BS when no model is given)."""
    s3, s5 = (model.s3, model.s5) if model else (CR, BS)
    if op[0] == "raw":
        return op[1]
    if op[0] == "long":                    # a chain padded with ';' to exactly `size` bytes
        _, head, size = op
        body = head + b";" + b";".join([b"+CMEE?"] * ((size - len(head) - 1) // 7))
        return b"AT" + body + b";" * (size - len(body)) + bytes([s3])
    _, prefix, cmds, end, edits, retype_t = op
    text = bytearray(b";".join(cmds))
    for pos, junk in sorted(edits, reverse=True):      # typed, then rubbed out with S5
        pos = min(pos, len(text))
        text[pos:pos] = junk + bytes([s5]) * len(junk)
    head = prefix + (bytes([s5]) + prefix[1:] if retype_t else b"")
    return head + bytes(text) + bytes([s3]) + end[1:]


# == the hostile host's tty operations ==========================================================
def _flip(fd: int, index: int, set_bits: int = 0, clear_bits: int = 0, speed: int | None = None) -> None:
    attrs = termios.tcgetattr(fd)
    attrs[index] = (attrs[index] & ~clear_bits) | set_bits
    if speed is not None:
        attrs[4] = attrs[5] = speed
    try:
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
    except termios.error:               # (the pty refuses some -- PARENB, CS7 -- with EINVAL:
        pass                            # the host carries on regardless, as fuzzers do)


def tty_op(host: Host, rnd: random.Random) -> None:
    """Something a host does to its own tty that a pty does not carry (docs/behaviour.md:
    baud, parity, CS7, breaks change nothing) -- never ISTRIP, ICANON or ECHO."""
    fd = host.ser.fd
    k = rnd.randrange(7)
    if k == 0:
        _flip(fd, 2, speed=rnd.choice([termios.B1200, termios.B9600, termios.B57600,
                                       termios.B115200, termios.B230400, termios.B921600]))
    elif k == 1:
        _flip(fd, 2, rnd.choice([0, termios.PARENB, termios.PARENB | termios.PARODD]),
              termios.PARENB | termios.PARODD)
    elif k == 2:
        _flip(fd, 2, rnd.choice([termios.CS7, termios.CS8]), termios.CSIZE)
    elif k == 3:
        _flip(fd, 2, rnd.choice([0, termios.CSTOPB]), termios.CSTOPB)
    elif k == 4:
        _flip(fd, 0, rnd.choice([0, termios.IXON]), termios.IXON)   # the host's own output control
    elif k == 5:
        termios.tcsendbreak(fd, 0)
    else:
        termios.tcdrain(fd)


def drain(host: Host) -> None:
    n = host.ser.in_waiting
    if n:
        chunk = host.ser.read(n)
        host.pending += chunk
        host.transcript += chunk


def hostile_write(host: Host, data: bytes, rnd: random.Random, bytewise: bool = False,
                  read: bool = True) -> None:
    """data in pieces of 1-9 bytes (one byte a write when bytewise), now and then a gap of up
    to 3 ms or a tty operation between two pieces; what came meanwhile is read."""
    i = 0
    while i < len(data):
        n = 1 if bytewise else rnd.randint(1, 9)
        host.write(data[i:i + n])
        i += n
        r = rnd.random()
        if r < 0.02:
            time.sleep(rnd.random() * 0.003)
        elif r < 0.04:
            tty_op(host, rnd)
        if read:
            drain(host)


def write_line(host: Host, text: bytes, rnd: random.Random, model: Model) -> None:
    """hostile_write (no reads) of bytes the model has just been fed; a prompt-opening
    line's CR LF goes in one write (behaviour.md late-LF table: a host seen ending lines
    with CR alone whose LF the emulator reads after the host read the prompt -- a loaded
    machine -- sends data; a documented Limit the model does not predict.  Under load the
    example failed there first, and hypothesis's rerun of it reported a misleading
    "read is no prefix of the server's bytes": the first run's reads were never counted)."""
    if model.state == "data" and text.endswith(bytes([model.s3, LF])):
        hostile_write(host, text[:-2], rnd, read=False)
        host.write(text[-2:])
    else:
        hostile_write(host, text, rnd, read=False)


def settle_raw(host: Host) -> None:
    """Back to what a well-behaved pyserial host has (8N1, 115200, no IXON)."""
    fd = host.ser.fd
    _flip(fd, 2, termios.CS8, termios.CSIZE | termios.PARENB | termios.PARODD | termios.CSTOPB,
          speed=termios.B115200)
    _flip(fd, 0, 0, termios.IXON)


def expect(host: Host, want: bytes, timeout: float = 10, quiet: float = 0.0) -> None:
    """Exactly `want` next; with `quiet`, nothing after it for that long (within a program the
    next expectation's exact bytes catch any extra byte)."""
    deadline = time.monotonic() + timeout
    while len(host.pending) < len(want) and time.monotonic() < deadline:
        host._fill()
    got = bytes(host.pending[:len(want)])
    del host.pending[:len(want)]
    assert got == want, (got[-300:], want[-300:])
    if quiet:
        assert host.quiet_for(quiet) == b""


def sync(host: Host) -> Model:
    """Whatever the state, bring the module to ATE0 V1 Q0 CMEE 1 (last line +CMEE=1)."""
    settle_raw(host)
    host.write(b"\rATQ0V1E0S5=8\r")
    host.read_until(b"\r\nOK\r\n", 10)
    host.quiet_for(0.03)
    host.write(b"AT+CMEE=1\r")
    expect(host, b"\r\nOK\r\n")
    return Model(e=0, v=1, q=0, cmee=1, last=b"+CMEE=1")


def resync(host: Host, model: Model) -> None:
    """From whatever state the model (kept across examples) says the module is in: end any
    half line with the current S3, then put E0 V1 Q0 S5 8 S4 10 S3 13 back -- every byte of
    it as the model says."""
    settle_raw(host)
    t = bytes([model.s3])
    text = t + t.join([b"ATQ0", b"ATV1", b"ATE0", b"ATS5=8", b"ATS4=10", b"ATS3=13"]) + t   # (S3 may be ';')
    want = model.feed(text)
    host.write(text)
    expect(host, want)
    assert (model.e, model.v, model.q, model.s3, model.s4, model.s5) == (0, 1, 0, CR, LF, BS)


def stream_of(ops, model: Model) -> tuple[bytes, bytes]:
    """The ops' bytes, each rendered with S3/S5 as they will be when the host types it, and
    the module's answer to them."""
    stream, want = bytearray(), bytearray()
    for op in ops:
        text = render(op, model)
        want += model.feed(text)
        stream += text
    return bytes(stream), bytes(want)


# == property: the model's bytes whatever the host does to the writes and its tty ================
@pytest.mark.parametrize("profile", PROFILES)
def test_hostile_typing_with_edits_repeats_and_tty_changes_answers_exactly_the_model(
        emulator, open_modem, strict_log, profile):
    """Programs of lines (S3 / S4 / S5 changed too: to '#', NUL, LF, ';', '~'; lines then end
    and are edited with the new ones), A/, garbage and chains at line_max, in hostile pieces."""
    host, _ = open_modem(profile)
    model = Model(e=0, last=b"E0")                    # (open_modem's ATE0)

    @settings(max_examples=40 if profile == "ec2x" else 20, deadline=None, derandomize=True,
              phases=NO_SHRINK, suppress_health_check=list(HealthCheck))
    @given(ops_st, st.sampled_from([0, 1]), st.booleans(), st.integers(0, 2**32))
    def prop(ops, start_echo, bytewise, seed):
        rnd = random.Random(seed)
        resync(host, model)
        if start_echo:
            host.write(b"ATE1\r")
            expect(host, model.feed(b"ATE1\r"))
        stream, want = stream_of(ops, model)
        hostile_write(host, stream, rnd, bytewise)
        settle_raw(host)
        expect(host, want, quiet=0.02)

    prop()
    resync(host, model)
    assert host.at("AT") == b"\r\nOK\r\n"


# == property: cut off by a hang-up at any byte ==================================================
@pytest.mark.parametrize("profile", PROFILES)
def test_hangup_at_a_seeded_byte_leaves_exactly_the_whole_lines_state_and_no_stale_byte(
        emulator, open_modem, strict_log, profile):
    host, port = open_modem(profile)
    hosts = [host]
    model = Model(e=0, last=b"E0")

    def reopen(cls=Host) -> Host:
        hosts[-1].close()
        wait_for(lambda: not port.port.attached, 10, "the hang-up")
        nxt = cls(port.path)
        hosts.append(nxt)
        emulator.run(port.port.look_for_host)
        return nxt

    @settings(max_examples=24 if profile == "ec2x" else 12, deadline=None, derandomize=True,
              phases=NO_SHRINK, suppress_health_check=list(HealthCheck))
    @given(ops_st, st.integers(0, 10**9), st.booleans())
    def prop(ops, seed, odd):
        rnd = random.Random(seed)
        where, how_much = rnd.random(), rnd.random()
        resync(hosts[-1], model)
        stream, _ = stream_of(ops, Model(**{k: getattr(model, k) for k in ("e", "v", "q", "cmee", "last")}))
        cut = int(where * len(stream))
        want = model.feed(stream[:cut])
        h = hosts[-1]
        hostile_write(h, stream[:cut], rnd)
        read = int(how_much * len(want))             # the program reads a part and leaves
        assert h.read_exactly(read, 10) == want[:read]
        nxt = reopen(OddHost if odd else Host)
        model.hangup()
        # what the next program types first: shows A/'s line, E, V, Q, S3-S5 and CMEE
        t = bytes([model.s3])
        probe = b"A/AT+CMEE?;S5?;S3?;S4?" + t + b"ATQ0;V1" + t + b"AT+CMEE?" + t
        nxt.write(probe)
        expect(nxt, model.feed(probe), quiet=0.02)

    prop()
    resync(hosts[-1], model)
    assert hosts[-1].at("AT") == b"\r\nOK\r\n"
    for x in hosts:
        x.close()


# == property: the same on a UART (--uart: a program change is no hang-up) =======================
@pytest.mark.parametrize("profile", PROFILES)
def test_uart_program_change_at_a_seeded_byte_is_invisible_to_the_model(emulator, open_modem, strict_log, profile):
    """--uart (hangup_on_close=False): the module never sees the program change, so a line,
    an `A` of `A/`, a CR LF, an overflowing chain, an S3/S5 change left half way by one
    program goes on with the next one's bytes (docs/behaviour.md, --uart).  Each program reads
    all it caused before it leaves (what nobody reads is lost on a UART); the next one, typing
    the rest in hostile pieces, reads exactly what the model says for the rest."""
    host, port = open_modem(profile, hangup_on_close=False)
    model = Model(e=0, last=b"E0")
    hosts = [host]

    @settings(max_examples=14 if profile == "ec2x" else 8, deadline=None, derandomize=True,
              phases=NO_SHRINK, suppress_health_check=list(HealthCheck))
    @given(ops_st, st.integers(0, 10**9), st.booleans())
    def prop(ops, seed, odd):
        rnd = random.Random(seed)
        resync(hosts[-1], model)
        stream, _ = stream_of(ops, Model(**{k: getattr(model, k) for k in ("e", "v", "q", "cmee", "last")}))
        cut = int(rnd.random() * len(stream))
        h = hosts[-1]
        hostile_write(h, stream[:cut], rnd)
        expect(h, model.feed(stream[:cut]), quiet=0.02)
        h.close()
        time.sleep(0.06)                             # (the emulator's look for a host: 50 ms)
        nxt = (OddHost if odd else Host)(port.path)
        hosts.append(nxt)
        emulator.run(port.port.look_for_host)
        assert emulator.run(lambda: port.port.attached)
        hostile_write(nxt, stream[cut:], rnd)
        settle_raw(nxt)
        expect(nxt, model.feed(stream[cut:]), quiet=0.02)

    prop()
    resync(hosts[-1], model)
    assert hosts[-1].at("AT") == b"\r\nOK\r\n"
    for x in hosts:
        x.close()


# == specific cuts the property may not hit ======================================================
CUTS = [
    (b"ATE1\r", b"A", b"/"),                       # between A and /: no repeat for the next
    (b"ATV0\r", b"AT+CMEE=2;E1\r", b"\n"),         # between CR and LF: the line ran
    (b"ATQ1\r", b"AT" + b"+CMEE?;" * 150, b"\r"),  # inside a 1 KiB chain: nothing of it runs
    (b"ATE1\r", b"AT\x08", b"T\r"),                # T rubbed out, T typed by the next program
    (b"AT+CMEE=0\r", b"AT+CMEE=2;V0\r\nA", b"/"),  # a whole line, then A
]


@pytest.mark.parametrize("before, left, nxt", CUTS, ids=range(len(CUTS)))
def test_the_next_program_finishing_the_departed_ones_bytes_finishes_nothing(
        emulator, open_modem, strict_log, before, left, nxt):
    host, port = open_modem("ec2x")
    model = Model(e=0, v=1, q=0, cmee=1, last=b"E0")
    host.write(before)
    expect(host, model.feed(before))
    host.write(left)
    want = model.feed(left)
    host.read_exactly(len(want) // 2, 5)             # reads half of what it caused and leaves
    host.close()
    wait_for(lambda: not port.port.attached, 10, "the hang-up")
    model.hangup()
    new = OddHost(port.path)
    emulator.run(port.port.look_for_host)
    try:
        tail = nxt + b"AT+CMEE?\rA/"
        new.write(tail)
        expect(new, model.feed(tail), quiet=0.05)
        settle_raw(new)
        new.write(b"ATQ0V1E0\r")
        new.read_until(b"\r\nOK\r\n", 5)
        assert new.at("AT") == b"\r\nOK\r\n"
    finally:
        new.close()


# == 100 KiB of garbage, then AT ================================================================
@pytest.mark.parametrize("profile", PROFILES)
def test_hundred_kib_of_garbage_in_random_writes_with_tty_changes_then_at(
        emulator, open_modem, strict_log, profile):
    host, port = open_modem(profile, echo=True)
    host.close()
    host = OddHost(port.path)
    try:
        emulator.run(port.port.look_for_host)
        rnd = random.Random(15_100 + len(profile))
        parts = []
        while sum(map(len, parts)) < 100 * 1024:
            k = rnd.random()
            if k < 0.8:
                parts.append(bytes(rnd.choice(GARBAGE) for _ in range(rnd.randint(1, 64))))
            elif k < 0.9:
                parts.append(b"A" + bytes([rnd.choice(NOT_T)]))
            elif k < 0.95:
                parts.append(b"AT" + bytes(rnd.choice(NOT_T[40:]) for _ in range(rnd.randint(0, 20))))
                parts[-1] += b"\x08" * (len(parts[-1]))
            else:
                parts.append(rnd.choice([b"\r\n", b"\r", b"\n", b"\r\r\n\n"]))
        garbage = b"".join(parts)
        model = Model(e=1, v=1, q=0, cmee=1, last=b"")
        want = model.feed(garbage + b"AT\r")
        assert want.endswith(b"AT\r\r\nOK\r\n") and want.count(b"OK") == garbage.count(b"OK") + 1
        i = 0
        got = bytearray()
        while i < len(garbage):
            n = rnd.choice([1, 3, 7, 64, 511, 4096])
            host.write(garbage[i:i + n])
            i += n
            if rnd.random() < 0.1:
                tty_op(host, rnd)
            host._fill()
        settle_raw(host)
        host.write(b"AT\r")
        got = host.read_exactly(len(want), 20)
        assert got == want, next(j for j in range(len(want)) if got[j] != want[j])
        assert host.quiet_for(0.05) == b""
        assert host.at("ATE0").endswith(b"\r\nOK\r\n")
        assert host.at("AT") == b"\r\nOK\r\n"
    finally:
        host.close()


# == property: the same host around an SSL socket's prompt and reads ============================

SOCK_COMMANDS = [
    b"+QSSLRECV=0,7", b"+QSSLRECV=0,1500", b"+qsslrecv=0,1", b"+QSSLRECV=0,0", b"+QSSLRECV=0,1501",
    b"+QSSLRECV=0,333", b"+QSSLRECV=0,333", b"+QSSLSEND=0,5", b"+QSSLSEND=0,1", b"+QSSLSEND=0,1460",
    b"+QSSLSEND=0,0", b"+QSSLSEND=0,1461", b"+qsslsend=0,64", b"+QSSLSEND=0,5"]
DATA = bytes(b for b in range(256) if b not in (0x11, 0x13))
ML_SOCK_COMMANDS = [
    b"+QSSLRECV=1,0,7", b"+QSSLRECV=1,0,1500", b"+qsslrecv=1,0,1", b"+QSSLRECV=1,0,0",
    b"+QSSLRECV=1,0,1501", b"+QSSLRECV=1,0,333", b"+QSSLRECV=1,0,333", b"+QSSLSEND=0",
    b"+QSSLSEND=0", b"+qsslsend=0", b"+QSSLSEND=0,5"]


def sock_ops(commands: list[bytes]):
    line = st.tuples(
        st.sampled_from([b"AT", b"at", b"aT"]),
        st.lists(st.one_of(st.sampled_from(commands), st.sampled_from(COMMANDS)), min_size=1, max_size=4),
        st.sampled_from([b"\r", b"\r\n"]),
        st.lists(st.tuples(st.integers(0, 40), st.binary(min_size=1, max_size=3).map(
            lambda j: bytes(JUNK[x % len(JUNK)] for x in j))), max_size=2),
        st.booleans(),
    ).map(lambda t: ("line",) + t)
    return st.lists(st.one_of(line, line, line, garbage_st, repeat_st), min_size=4, max_size=14)


SOCK_OPS = {"ec2x": sock_ops(SOCK_COMMANDS), "ml302": sock_ops(ML_SOCK_COMMANDS)}


def prompt_data(rnd: random.Random, model: SockModel) -> bytes:
    """Data for a `> `: the module's own framing, line editing and "A/" among them; never
    LF first (a CR LF line's late LF, docs) nor CR last.  EC2x: exactly the fixed length
    (Ctrl+Z and ESC are data); ML302: up to 1500 bytes then Ctrl+Z (or ESC, or Ctrl+Z at once)."""
    ml = model.remaining < 0
    n = model.remaining if not ml else rnd.choice([0, 1, 5, 64, 300, 1460, 1461, 1500, 1460, 1461])
    nasty = [b"\r\nOK\r\n", b"A/", b"AT\r", b"\x08\x08", b"+++", b"\x00\xff", b"a/"] + \
        ([] if ml else [b"\x1a", b"\x1b"])
    alphabet = bytes(b for b in DATA if not (ml and b in (0x1A, 0x1B)))
    out = bytearray()
    while len(out) < n:
        out += rnd.choice(nasty) if rnd.random() < 0.3 else \
            bytes(rnd.choice(alphabet) for _ in range(rnd.randint(1, 40)))
    out = out[:n]
    if out and out[0] == LF:
        out[0] = 0x42
    if out and out[-1] == CR:
        out[-1] = 0x43
    if ml:
        out += b"\x1b" if rnd.random() < 0.15 else b"\x1a"
    return bytes(out)


SIDES = {
    "ec2x": dict(model=SockModel, urc=b'\r\n+QSSLURC: "recv",0\r\n', recv=b"+QSSLRECV=0,1500"),
    "ml302": dict(model=Ml302SockModel, urc=b'\r\n+QSSLURC: "recv",1,0\r\n', recv=b"+QSSLRECV=1,0,1500"),
}


def drain_socket(host: Host, profile: str) -> bytes:
    """AT+QSSLRECV of 1500 (V1, E0) until the buffer is empty: what it held."""
    got = bytearray()
    head = re.compile(rb"\r\n\+QSSLRECV: (?:[0-9.]+:443,TCP,)?(\d+)\r\n|\r\nOK\r\n")
    while True:
        host.write(b"AT" + SIDES[profile]["recv"] + b"\r")
        m = head.fullmatch(host.read_until(head, 10))
        assert m, "stale bytes before a read's answer"
        k = int(m.group(1) or 0)
        if not k:
            if m.group(1):
                expect(host, b"\r\nOK\r\n")
            return bytes(got)
        got += host.read_exactly(k, 10)
        expect(host, b"\r\n\r\nOK\r\n")


class SockRig:
    """Socket 0 (buffer mode) of a fresh module to a Python ssl sink; each program starts
    with the module synced (E0 V1 Q0, S5 8), the buffer drained, a fresh block from the
    server announced by its one "recv" URC."""

    def __init__(self, emulator, open_modem, profile: str) -> None:
        self.profile, self.side = profile, SIDES[profile]
        self.rig = Rig(emulator, open_modem, profile)
        self.conn = None
        self.blocks = bytearray()       # every byte the server sent
        self.read = bytearray()         # every byte the hosts read of them

    def __enter__(self) -> "SockRig":
        self.rig.server()
        self.rig.open(0)
        self.conn = conn_of(self.rig.servers[-1])
        return self

    def __exit__(self, *exc) -> None:
        self.rig.close_all()

    def start(self, rnd: random.Random, size: int) -> SockModel:
        host = self.rig.host
        sync(host)
        self.read += drain_socket(host, self.profile)
        assert bytes(self.read) == bytes(self.blocks[:len(self.read)])
        block = bytes(rnd.choice(DATA) for _ in range(size))
        self.conn.send(block)
        self.blocks += block
        expect(host, self.side["urc"])
        time.sleep(0.02)
        self.block = block
        return self.fresh()

    def fresh(self) -> SockModel:
        model = self.side["model"](e=0, v=1, q=0, cmee=1, last=self.side["recv"])
        model.rx += self.block
        return model

    def finish(self) -> None:
        host = self.rig.host
        sync(host)
        self.read += drain_socket(host, self.profile)
        assert bytes(self.read) == bytes(self.blocks)
        assert host.quiet_for(0.1) == b""
        assert host.at("AT") == b"\r\nOK\r\n"


@pytest.mark.parametrize("profile", PROFILES)
def test_hostile_host_around_ssl_prompts_and_reads_answers_exactly_the_model(
        emulator, open_modem, strict_log, profile):
    """Socket 0 (buffer mode) to a Python ssl sink; each example the server sends a block
    (one URC), then the hostile program: lines with sends and reads of any length (also
    refused ones: 0, 1461, 1501; the ML302: Ctrl+Z sends, ESC, empty sends, the EC2x form),
    E/V/Q/S5/&F changes, edits, garbage, A/ (repeating a send opens its prompt again).  The
    host waits for each `> ` (the model's bytes up to it) and writes the data -- framing
    bytes, BS, "A/", "AT<CR>" in it -- in hostile pieces with tty changes and breaks.
    Every byte as the model says; the server gets exactly the data of the sends, in order;
    every byte the server sent is read once, in order."""
    with SockRig(emulator, open_modem, profile) as sr:
        host, conn = sr.rig.host, sr.conn

        @settings(max_examples=24 if profile == "ec2x" else 16, deadline=None, derandomize=True,
                  phases=NO_SHRINK, suppress_health_check=list(HealthCheck))
        @given(SOCK_OPS[profile], st.integers(1, 1400), st.integers(0, 2**32), st.sampled_from([0, 1]))
        def prop(ops, size, seed, start_echo):
            rnd = random.Random(seed)
            model = sr.start(rnd, size)
            sent_before = len(conn.received)
            if start_echo:
                host.write(b"ATE1\r")
                expect(host, model.feed(b"ATE1\r"))
            for op in ops:
                if op[0] == "raw" and op[1].endswith(b"/") and b"SEND" in model.last.upper() \
                        and rnd.random() < 0.5:
                    continue                              # (not every A/ repeats a send)
                text = render(op, model)
                want = model.feed(text)
                write_line(host, text, rnd, model)
                expect(host, want)
                if model.state == "data":
                    data = prompt_data(rnd, model)
                    want = model.feed(data)
                    assert model.state != "data"
                    hostile_write(host, data, rnd)
                    settle_raw(host)
                    expect(host, want)
            settle_raw(host)
            assert host.quiet_for(0.02) == b""
            assert wait_received(conn, sent_before + len(model.sent), 10)[sent_before:] == bytes(model.sent)
            sr.read += model.got

        prop()
        sr.finish()


@pytest.mark.parametrize("profile", PROFILES)
def test_hangup_anywhere_in_a_hostile_socket_program_keeps_exactly_what_completed(
        emulator, open_modem, strict_log, profile):
    """The socket program above, cut by a hang-up at a seeded byte -- inside a line, between
    a send line's CR and LF, at a `> ` with part of the data written, right after the data's
    last byte (EC2x) or its Ctrl+Z (ML302), with a read's answer half read -- after reading a
    random part of the output.  The next program (odd-chunk reader or not): the server got
    the completed sends' data exactly (an abandoned prompt sends nothing), the settings are
    the whole lines', no stale byte, the socket's buffer what the model left: every server
    byte read once, in order."""
    with SockRig(emulator, open_modem, profile) as sr:
        rig, conn = sr.rig, sr.conn

        @settings(max_examples=20 if profile == "ec2x" else 14, deadline=None, derandomize=True,
                  phases=NO_SHRINK, suppress_health_check=list(HealthCheck))
        @given(SOCK_OPS[profile], st.integers(1, 1400), st.integers(0, 2**32), st.booleans())
        def prop(ops, size, seed, odd):
            rnd = random.Random(seed)
            where, how_much = rnd.random(), rnd.random()     # (hypothesis' floats favour 0 and 1)
            host = rig.host
            model = sr.start(rnd, size)
            sent_before = len(conn.received)
            # the whole program as the host would write it: (bytes, answer) pieces, the data
            # of a `> ` a piece of its own (written once the prompt came)
            pieces: list[bytes] = []
            for op in ops:
                text = render(op, model)
                model.feed(text)
                pieces.append(text)
                if model.state == "data":
                    data = prompt_data(rnd, model)
                    model.feed(data)
                    pieces.append(data)
            cut = int(where * sum(map(len, pieces)))
            model = sr.fresh()                 # (again: the same state, the block unread)
            left = cut
            for text in pieces:
                part = text[:left]
                left -= len(part)
                want = model.feed(part)
                write_line(host, part, rnd, model)
                expect(host, want if left else want[:int(how_much * len(want))])
                if not left:
                    break
            settle_raw(host)
            rig.host.close()
            wait_for(lambda: not rig.port.port.attached, 10, "the hang-up")
            model.hangup()
            nxt = (OddHost if odd else Host)(rig.port.path)
            rig.hosts.append(nxt)
            rig.host = nxt
            emulator.run(rig.port.port.look_for_host)
            probe = b"AT+CMEE?;S5?\rATQ0;V1\rAT+CMEE?\r"
            if b"SEND" not in model.last.upper():
                probe = b"A/" + probe
            nxt.write(probe)
            expect(nxt, model.feed(probe), quiet=0.02)
            assert model.state == "idle"
            assert wait_received(conn, sent_before + len(model.sent), 10)[sent_before:] == bytes(model.sent)
            time.sleep(0.02)
            assert len(conn.received) == sent_before + len(model.sent)
            sr.read += model.got

        prop()
        sr.finish()

