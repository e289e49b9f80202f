"""Model-based (hypothesis RuleBasedStateMachine) tests of the modules' storage, over the pty.

Machine 1, ``Ec2xFileSystem`` (EC2x profile): a Python model of the UFS and RAM drives
(``(drive, basename) -> bytes``), of the open handles (handle -> drive, basename, mode,
position) and of the AT+QSSLCFG certificate paths of the six SSL contexts.  Its rules drive
AT+QFUPL (CONNECT, the exact byte count, random binary contents, UFS:/RAM:/bare/lower-case
drive names), AT+QFDWL (the bytes, size and checksum), AT+QFLST (exec, "*", "RAM:*",
wildcard and exact patterns), AT+QFLDS (both forms, both drives), AT+QFDEL (one file and
wildcards), AT+QFMOV (rename / copy / across drives, overwrite or not: the profile lists it),
AT+QFOPEN (modes 0/1/2 and none), AT+QFOPEN?, AT+QFREAD, AT+QFWRITE (CONNECT, exact
lengths, too large for the drive), AT+QFSEEK (whence none/0/1/2, inside and beyond the
end), AT+QFPOSITION, AT+QFTUCAT, AT+QFCLOSE, AT+QSSLCFG="cacert"/"clientcert"/"clientkey"/
"cacertex" naming those files (configuration only, read back), names outside the rules of
docs/behaviour.md (406) and AT+CFUN=1,1.  Every answer is compared byte for byte with what
the model predicts: sizes, "+QFUPL: <size>,<checksum>" / "+QFDWL: ..." with the 16-bit XOR
checksum (computed here independently of emulator/storage/checksum.py), the +CME ERROR code
of a missing file (405; AT+QFLST of one 417), a bad name (406), an existing file (407), an open file (426), too
many handles (413), an unknown handle (416), a read-only handle (414), a seek past the end
(401), a read at the end (402), no room (403), and free space consistent with the files.
Invariants: a download returns exactly the model's bytes; a reboot keeps UFS and loses RAM,
every handle and the AT+QSSLCFG paths; after every step the modem answers AT with OK.

Machine 2, ``Ml302CertStore`` (ML302 profile): a model of the three AT+QSECWRITE slots
(slot -> bytes or empty): AT+QSECWRITE (filled slot 3 before the prompt, empty write 50,
over 16384 bytes 20, ESC cancels), AT+QSECREAD (1,<checksum> / 22), AT+QSECDEL, a bad
<crtflag> (50) and AT+CFUN=1,1 (the slots persist), random binary contents (no Ctrl+Z/ESC).

Both hosts end their lines with CR LF, write some lines and data byte by byte or in pieces,
and read the answers in odd chunk sizes.  The modems run on manual time, so no idle timer
(AT+QFUPL's 5 s) fires under a loaded machine: the runs are deterministic (the suite's
derandomized hypothesis profile).  No log record may carry a traceback or be an error.
"""
from __future__ import annotations

import collections
import itertools
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, invariant, precondition, rule,
                                 run_state_machine_as_test)

from emulator.io.app import BackgroundEmulator
from emulator.testing.host import Host

OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"
TIMEOUT = 10

_PROFILE = tomllib.loads((Path(__file__).resolve().parents[2] / "emulator" / "profiles" / "ec2x.toml")
                         .read_text())
CAPACITY = {"UFS": _PROFILE["files"]["ufs_capacity"], "RAM": _PROFILE["files"]["ram_capacity"]}
FIRST_HANDLE = _PROFILE["files"]["first_handle"]
MAX_OPEN = _PROFILE["files"]["max_open"]
MAX_NAME = _PROFILE["files"]["max_name_len"]
HAS_QFMOV = "+QFMOV" in _PROFILE["commands"]
BOOT_URCS = b"".join(b"\r\n" + urc.encode() + b"\r\n" for urc in _PROFILE["defaults"]["boot_urcs"])

FINAL = re.compile(rb"(?:^|\r\n)(?:OK|ERROR|\+CME ERROR: [^\r\n]*)\r\n")
CONNECT_OR_FINAL = re.compile(rb"\r\nCONNECT\r\n|(?:^|\r\n)(?:OK|ERROR|\+CME ERROR: [^\r\n]*)\r\n")
READ_HEAD_OR_FINAL = re.compile(rb"\r\nCONNECT (\d+)\r\n|(?:^|\r\n)(?:OK|ERROR|\+CME ERROR: [^\r\n]*)\r\n")
PROMPT_OR_FINAL = re.compile(rb"\r\n> |(?:^|\r\n)(?:OK|ERROR|\+CME ERROR: [^\r\n]*)\r\n")


def cme(code: int) -> bytes:
    return b"\r\n+CME ERROR: %d\r\n" % code


def xor_checksum(data: bytes) -> int:
    """The manuals' checksum, written out word by word: big-endian 16-bit words XORed, an
    odd last byte the high half of a word whose low half is 0."""
    value = 0
    for i in range(0, len(data), 2):
        value ^= (data[i] << 8) | (data[i + 1] if i + 1 < len(data) else 0)
    return value


def wildcard_match(pattern: str, name: str) -> bool:
    """'*' any run, '?' one character, everything else itself (no [classes])."""
    if not pattern:
        return not name
    if pattern[0] == "*":
        return any(wildcard_match(pattern[1:], name[i:]) for i in range(len(name) + 1))
    if not name:
        return False
    return (pattern[0] == "?" or pattern[0] == name[0]) and wildcard_match(pattern[1:], name[1:])


class Wire:
    """The host's side: CR LF lines written whole or byte by byte, data in pieces, answers
    read in odd chunk sizes (Host._fill replaced), each answer taken up to its final result."""

    def __init__(self, emulator, host, port) -> None:
        self.emulator, self.host, self.port = emulator, host, port
        self._chunks = itertools.cycle([7])
        host._fill = self._fill
        self.log: collections.deque = collections.deque(maxlen=40)   # the last writes, for failures

    def _fill(self) -> None:
        ser = self.host.ser
        chunk = ser.read(min(next(self._chunks), max(1, ser.in_waiting)))
        if chunk:
            self.host.pending += chunk

    def reading(self, sizes: list[int]) -> None:
        self._chunks = itertools.cycle(sizes)

    def line(self, text: str | bytes, bytewise: bool = False) -> None:
        """A CR LF line.  Byte by byte, the host then waits until the modem has read it all,
        as a UART's byte times would: written back to back, the emulator may read the bytes
        as one whole line and the LF (written while the prompt went out) together with the
        data -- which docs/behaviour.md (command line) makes data for a host never *seen*
        writing its CR and LF apart: its documented limit, not what this model tests."""
        raw = (text.encode("latin-1") if isinstance(text, str) else text) + b"\r\n"
        self.data(raw, [1] if bytewise else [len(raw)])
        if bytewise:
            self.emulator.wait_received(self.port, self.host.written)

    def data(self, raw: bytes, pieces: list[int]) -> None:
        at, sizes = 0, itertools.cycle(pieces or [len(raw) or 1])
        while at < len(raw):
            n = max(1, next(sizes))
            self.host.write(raw[at:at + n])
            self.log.append(raw[at:at + n][:60])
            at += n

    def until(self, regex: re.Pattern) -> bytes:
        return self.host.read_until(regex, timeout=TIMEOUT)

    def exactly(self, n: int) -> bytes:
        return self.host.read_exactly(n, timeout=TIMEOUT)

    def cmd(self, text: str | bytes, bytewise: bool = False) -> bytes:
        self.line(text, bytewise)
        return self.until(FINAL)

    def reboot(self, urcs: bytes) -> None:
        """AT+CFUN=1,1, the start-up URCs (the manual clock moved past them), ATE0 again."""
        assert self.cmd("AT+CFUN=1,1") == OK
        self.emulator.wait_received(self.port, self.host.written)
        self.emulator.advance(self.port, 1.0)
        assert self.exactly(len(urcs)) == urcs
        assert self.cmd("ATE0") == b"ATE0\r" + OK          # echo is back on after the restart


# -- machine 1: the EC2x file system ---------------------------------------------------------

# A few basenames (so that names collide), with the characters the rules allow: case matters,
# spaces inside, punctuation (',' ';' '=' inside quotes), '[' which is no wildcard class, the
# longest allowed name.
BASENAMES = ["a", "A", "b.bin", "cacert.pem", "client key.pem", "x,y;z=1", "k'[1]~!#$%&()@^`{|}",
             "n" * MAX_NAME]
DRIVE_FORMS = {"UFS": ["", "UFS:", "ufs:", "Ufs:"], "RAM": ["RAM:", "ram:", "rAm:"]}
# Names the rules refuse (docs/behaviour.md, Files: 406); never wildcards here.
BAD_NAMES = ["", "RAM:", "UFS:", "../a", "a/b", "RAM:a\\b", "a..b", ".", " a", "a ", "RAM: a",
             "FOO:a", "C:a", "a:b", "RAM:a:b", "n" * (MAX_NAME + 1), "RAM:" + "n" * (MAX_NAME + 1),
             "a\tb", "caf\xe9", "x\x01y"]
# Wildcards are for AT+QFLST / AT+QFDEL only.
WILDCARD_NAMES = ["a*", "?", "RAM:*", "*"]
PATTERNS = ["*", "RAM:*", "ram:*", "UFS:*", "?", "*.pem", "c*", "RAM:*.bin", "*a*", "*[*", "n*n",
            "RAM:?", "b.bi?"]
BAD_HANDLES = [0, 1, FIRST_HANDLE - 1, FIRST_HANDLE + MAX_OPEN, 2**31 - 1]
REBOOT_EVERY = 12          # steps between two AT+CFUN=1,1 at least (else reboots wipe all state)
SSL_PATH_OPTIONS = ["cacert", "clientcert", "clientkey", "cacertex"]

names = st.tuples(st.sampled_from(["UFS", "RAM"]), st.sampled_from(BASENAMES))
chunk_sizes = st.lists(st.sampled_from([1, 2, 3, 5, 7, 13, 64, 4096]), min_size=1, max_size=3)
contents = st.one_of(st.binary(min_size=1, max_size=48), st.binary(min_size=1, max_size=3000))


@dataclass
class Handle:
    drive: str
    base: str
    mode: int
    pos: int = 0


def display(drive: str, base: str) -> str:
    return base if drive == "UFS" else f"RAM:{base}"


class Ec2xFileSystem(RuleBasedStateMachine):
    rig_root: Path
    rig_profile: str        # set by _run

    def __init__(self) -> None:
        super().__init__()
        self.rig = Rig(self.rig_root, self.rig_profile)
        self.wire = self.rig.modem()
        self.files: dict[tuple[str, str], bytes] = {}
        self.handles: dict[int, Handle] = {}
        self.ssl: dict[tuple[str, int], str] = {}
        self.since_reboot = 0

    # -- model helpers --------------------------------------------------------------------
    def used(self, drive: str) -> int:
        return sum(len(v) for (d, _), v in self.files.items() if d == drive)

    def free(self, drive: str) -> int:
        return CAPACITY[drive] - self.used(drive)

    def is_open(self, key) -> bool:
        return any((h.drive, h.base) == key for h in self.handles.values())

    def form(self, data, key) -> str:
        drive, base = key
        return data.draw(st.sampled_from(DRIVE_FORMS[drive]), label="drive form") + base

    def pick_handle(self, data) -> int:
        return data.draw(st.sampled_from(sorted(self.handles)), label="handle")

    def matching(self, pattern: str | None) -> tuple[str, list[str]]:
        drive, colon, base = (pattern or "*").partition(":")
        if not colon:
            drive, base = "UFS", pattern or "*"
        drive = drive.upper()
        return drive, sorted(b for (d, b) in self.files if d == drive and wildcard_match(base, b))

    # -- uploads, downloads --------------------------------------------------------------
    @rule(data=st.data(), key=names, content=contents, bytewise=st.booleans(), pieces=chunk_sizes,
          reading=chunk_sizes, ackmode=st.booleans())
    def upload(self, data, key, content, bytewise, pieces, reading, ackmode):
        """ackmode 1: an "A" (no CR LF) after every 1024 bytes but the last; the host waits
        for it before the next block."""
        self.wire.reading(reading)
        name = self.form(data, key)
        self.wire.line(f'AT+QFUPL="{name}",{len(content)}' + (",5,1" if ackmode else ""), bytewise)
        head = self.wire.until(CONNECT_OR_FINAL)
        if key in self.files:
            assert head == cme(407), (name, head)            # existing: delete first
            return
        assert head == b"\r\nCONNECT\r\n", (name, head)
        if ackmode:
            for at in range(0, len(content) - 1024, 1024):
                self.wire.data(content[at:at + 1024], pieces)
                assert self.wire.exactly(1) == b"A", at
            content_rest = content[(len(content) - 1) // 1024 * 1024:]
            self.wire.data(content_rest, pieces)
        else:
            self.wire.data(content, pieces)
        answer = self.wire.until(FINAL)
        assert answer == f"\r\n+QFUPL: {len(content)},{xor_checksum(content):x}\r\n".encode() + OK
        self.files[key] = content

    @rule(data=st.data(), key=names, extra=st.integers(1, 3))
    def upload_too_large(self, data, key, extra):
        """<file_size> one byte (or a few) past the drive's free space: 403 before CONNECT
        (407 first when the file exists)."""
        drive = key[0]
        size = self.free(drive) + extra
        answer = self.wire.cmd(f'AT+QFUPL="{self.form(data, key)}",{size}')
        assert answer == cme(407 if key in self.files else 403), answer

    @rule(data=st.data(), key=names, bytewise=st.booleans(), reading=chunk_sizes)
    def download(self, data, key, bytewise, reading):
        self.wire.reading(reading)
        name = self.form(data, key)
        self.wire.line(f'AT+QFDWL="{name}"', bytewise)
        head = self.wire.until(CONNECT_OR_FINAL)
        if key not in self.files:
            assert head == cme(405), (name, head)
            return
        if self.is_open(key):
            assert head == cme(426), (name, head)
            return
        assert head == b"\r\nCONNECT\r\n", (name, head)
        content = self.files[key]
        assert self.wire.exactly(len(content)) == content, name
        tail = f"\r\n+QFDWL: {len(content)},{xor_checksum(content):x}\r\n".encode() + OK
        assert self.wire.exactly(len(tail)) == tail

    # -- listings, space ----------------------------------------------------------------
    @rule(data=st.data(), kind=st.sampled_from(["exec", "pattern", "name"]), bytewise=st.booleans())
    def listing(self, data, kind, bytewise):
        if kind == "exec":
            line, pattern = "AT+QFLST", None
        elif kind == "pattern":
            pattern = data.draw(st.sampled_from(PATTERNS), label="pattern")
            line = f'AT+QFLST="{pattern}"'
        else:
            key = data.draw(names, label="name")
            pattern = self.form(data, key)
            line = f'AT+QFLST="{pattern}"'
        drive, bases = self.matching(pattern)
        want = b"".join(f'+QFLST: "{display(drive, b)}",{len(self.files[drive, b])}\r\n'.encode()
                        for b in bases)
        if kind == "name" and not bases:                 # a named file that is not there
            assert self.wire.cmd(line, bytewise) == cme(417), line
            return
        assert self.wire.cmd(line, bytewise) == (b"\r\n" + want if want else b"") + OK, line

    @rule(drive=st.sampled_from(["UFS", "RAM", "ufs", "RAM:", "exec", "QFOPEN?"]))
    def space(self, drive):
        """AT+QFLDS="<drive>" (free, total), AT+QFLDS (UFS bytes used, files) or AT+QFOPEN?."""
        if drive == "exec":
            return self.usage()
        if drive == "QFOPEN?":
            return self.open_listing()
        key = drive.upper().rstrip(":")
        want = f"\r\n+QFLDS: {self.free(key)},{CAPACITY[key]}\r\n".encode() + OK
        assert self.wire.cmd(f'AT+QFLDS="{drive}"') == want

    def usage(self):
        ufs = [v for (d, _), v in self.files.items() if d == "UFS"]
        want = f"\r\n+QFLDS: {sum(map(len, ufs))},{len(ufs)}\r\n".encode() + OK
        assert self.wire.cmd("AT+QFLDS") == want

    # -- delete, move -------------------------------------------------------------------
    @rule(data=st.data(), key=names, bytewise=st.booleans())
    def delete_one(self, data, key, bytewise):
        name = self.form(data, key)
        answer = self.wire.cmd(f'AT+QFDEL="{name}"', bytewise)
        if key not in self.files:
            assert answer == cme(405), name
        elif self.is_open(key):
            assert answer == cme(426), name
        else:
            assert answer == OK, name
            del self.files[key]

    @rule(pattern=st.sampled_from(PATTERNS))
    def delete_matching(self, pattern):
        drive, bases = self.matching(pattern)
        answer = self.wire.cmd(f'AT+QFDEL="{pattern}"')
        if any(self.is_open((drive, b)) for b in bases):
            assert answer == cme(426), pattern                 # nothing deleted
        else:
            assert answer == OK, pattern
            for b in bases:
                del self.files[drive, b]

    @precondition(lambda self: HAS_QFMOV)
    @rule(data=st.data(), src=names, dst=names, copy=st.sampled_from([None, 0, 1]),
          overwrite=st.sampled_from([None, 0, 1]))
    def move(self, data, src, dst, copy, overwrite):
        line = f'AT+QFMOV="{self.form(data, src)}","{self.form(data, dst)}"'
        if copy is not None:
            line += f",{copy}" + ("" if overwrite is None else f",{overwrite}")
        else:
            overwrite = None
        copy, overwrite = bool(copy), bool(overwrite)
        answer = self.wire.cmd(line)
        if src not in self.files:
            assert answer == cme(405), line
        elif self.is_open(src) or self.is_open(dst):
            assert answer == cme(426), line
        elif src == dst:
            assert answer == OK, line
        elif dst in self.files and not overwrite:
            assert answer == cme(407), line
        elif (copy or src[0] != dst[0]) and len(self.files[src]) > self.free(dst[0]) + len(self.files.get(dst, b"")):
            assert answer == cme(403), line
        else:
            assert answer == OK, line
            self.files[dst] = self.files[src]
            if not copy:
                del self.files[src]

    # -- open files ---------------------------------------------------------------------
    @rule(data=st.data(), key=names, mode=st.sampled_from([None, 0, 1, 2]), bytewise=st.booleans())
    def open(self, data, key, mode, bytewise):
        name = self.form(data, key)
        line = f'AT+QFOPEN="{name}"' + ("" if mode is None else f",{mode}")
        answer = self.wire.cmd(line, bytewise)
        if self.is_open(key):
            assert answer == cme(426), line
        elif len(self.handles) >= MAX_OPEN:
            assert answer == cme(413), line
        elif mode == 2 and key not in self.files:
            assert answer == cme(405), line
        else:
            handle = next(h for h in itertools.count(FIRST_HANDLE) if h not in self.handles)
            assert answer == f"\r\n+QFOPEN: {handle}\r\n".encode() + OK, line
            self.handles[handle] = Handle(key[0], key[1], mode or 0)
            if mode == 1 or key not in self.files:
                self.files[key] = b""

    @rule(data=st.data())
    def open_until_full(self, data):
        """Open files (mode 0) until files.max_open are open, then one more: 413."""
        free_keys = [(d, b) for d in ("UFS", "RAM") for b in BASENAMES if not self.is_open((d, b))]
        while len(self.handles) < MAX_OPEN:
            self.open(data, free_keys.pop(0), 0, False)
        line = f'AT+QFOPEN="{self.form(data, free_keys[0])}",{data.draw(st.integers(0, 2))}'
        assert self.wire.cmd(line) == cme(413), line

    def open_listing(self):
        want = b"".join(f'+QFOPEN: "{display(h.drive, h.base)}",{n},{h.mode}\r\n'.encode()
                        for n, h in sorted(self.handles.items()))
        assert self.wire.cmd("AT+QFOPEN?") == (b"\r\n" + want if want else b"") + OK

    @precondition(lambda self: self.handles)
    @rule(data=st.data(), bytewise=st.booleans(), reading=chunk_sizes)
    def read(self, data, bytewise, reading):
        self.wire.reading(reading)
        handle = self.pick_handle(data)
        h = self.handles[handle]
        size = len(self.files[h.drive, h.base])
        length = data.draw(st.one_of(st.none(), st.integers(1, max(1, size + 5))), label="length")
        self.wire.line(f"AT+QFREAD={handle}" + ("" if length is None else f",{length}"), bytewise)
        head = self.wire.until(READ_HEAD_OR_FINAL)
        content = self.files[h.drive, h.base]
        chunk = content[h.pos:] if length is None else content[h.pos:h.pos + length]
        if not chunk:
            assert head == cme(402), (handle, h, length)
            return
        assert head == f"\r\nCONNECT {len(chunk)}\r\n".encode(), (h, length, head)
        assert self.wire.exactly(len(chunk)) == chunk, (h, length)
        assert self.wire.exactly(len(OK)) == OK                 # the data run into OK
        h.pos += len(chunk)

    @precondition(lambda self: self.handles)
    @rule(data=st.data(), content=contents, bytewise=st.booleans(), pieces=chunk_sizes)
    def write(self, data, content, bytewise, pieces):
        handle = self.pick_handle(data)
        h = self.handles[handle]
        self.wire.line(f"AT+QFWRITE={handle},{len(content)}", bytewise)
        head = self.wire.until(CONNECT_OR_FINAL)
        if h.mode == 2:
            assert head == cme(414), handle
            return
        key = (h.drive, h.base)
        old = self.files[key]
        if max(len(old), h.pos + len(content)) > self.free(h.drive) + len(old):
            assert head == cme(403), handle
            return
        assert head == b"\r\nCONNECT\r\n", (handle, head)
        self.wire.data(content, pieces)
        new = old[:h.pos] + content + old[h.pos + len(content):]
        assert self.wire.until(FINAL) == f"\r\n+QFWRITE: {len(content)},{len(new)}\r\n".encode() + OK
        self.files[key] = new
        h.pos += len(content)

    @precondition(lambda self: self.handles)
    @rule(data=st.data(), extra=st.integers(1, 3))
    def write_too_large(self, data, extra):
        """<length> that does not fit the drive at the position: refused before CONNECT."""
        handle = self.pick_handle(data)
        h = self.handles[handle]
        key = (h.drive, h.base)
        length = self.free(h.drive) + len(self.files[key]) - h.pos + extra
        assert self.wire.cmd(f"AT+QFWRITE={handle},{length}") == cme(414 if h.mode == 2 else 403)

    @precondition(lambda self: self.handles)
    @rule(data=st.data(), whence=st.sampled_from([None, 0, 1, 2]))
    def seek(self, data, whence):
        handle = self.pick_handle(data)
        h = self.handles[handle]
        size = len(self.files[h.drive, h.base])
        pos = h.pos
        room = {None: size, 0: size, 1: size - pos, 2: size}[whence]
        offset = data.draw(st.one_of(st.integers(0, max(0, room)), st.integers(room + 1, room + 3),
                                     st.sampled_from([2**31 - 1])), label="offset")
        line = f"AT+QFSEEK={handle},{offset}" + ("" if whence is None else f",{whence}")
        answer = self.wire.cmd(line)
        target = {None: offset, 0: offset, 1: pos + offset, 2: size - offset}[whence]
        if 0 <= target <= size:
            assert answer == OK, (line, h, size)
            h.pos = target
        else:
            assert answer == cme(401), (line, h, size)

    @precondition(lambda self: self.handles)
    @rule(data=st.data())
    def position(self, data):
        handle = self.pick_handle(data)
        want = f"\r\n+QFPOSITION: {self.handles[handle].pos}\r\n".encode() + OK
        assert self.wire.cmd(f"AT+QFPOSITION={handle}") == want

    @precondition(lambda self: self.handles)
    @rule(data=st.data())
    def truncate(self, data):
        handle = self.pick_handle(data)
        h = self.handles[handle]
        answer = self.wire.cmd(f"AT+QFTUCAT={handle}")
        if h.mode == 2:
            assert answer == cme(414), handle
        else:
            assert answer == OK, handle
            key = (h.drive, h.base)
            self.files[key] = self.files[key][:h.pos]

    @precondition(lambda self: self.handles)
    @rule(data=st.data(), bytewise=st.booleans())
    def close(self, data, bytewise):
        handle = self.pick_handle(data)
        assert self.wire.cmd(f"AT+QFCLOSE={handle}", bytewise) == OK, handle
        del self.handles[handle]

    @rule(data=st.data(), command=st.sampled_from(["QFREAD", "QFWRITE", "QFSEEK", "QFPOSITION", "QFTUCAT",
                                                   "QFCLOSE"]))
    def unknown_handle(self, data, command):
        """A handle never given or closed already (a reboot closes all): 416 everywhere."""
        pool = BAD_HANDLES + [h for h in range(FIRST_HANDLE, FIRST_HANDLE + MAX_OPEN) if h not in self.handles]
        handle = data.draw(st.sampled_from(pool), label="unknown handle")
        line = {"QFWRITE": f"AT+QFWRITE={handle},5", "QFSEEK": f"AT+QFSEEK={handle},0,2"}.get(
            command, f"AT+{command}={handle}")
        assert self.wire.cmd(line) == cme(416), line

    # -- names outside the rules ---------------------------------------------------------
    @rule(data=st.data(), command=st.sampled_from(["QFUPL", "QFDWL", "QFOPEN", "QFLST", "QFDEL"]
                                                  + (["QFMOV"] if HAS_QFMOV else [])),
          bytewise=st.booleans())
    def bad_name(self, data, command, bytewise):
        """docs/behaviour.md, Files: '..', '/', '\\', control characters, over 80 characters, an
        unknown drive, leading or trailing spaces: 406; wildcards only in QFLST/QFDEL patterns."""
        pool = BAD_NAMES + ([] if command in ("QFLST", "QFDEL") else WILDCARD_NAMES)
        bad = data.draw(st.sampled_from(pool), label="bad name")
        line = {"QFUPL": f'AT+QFUPL="{bad}",5', "QFOPEN": f'AT+QFOPEN="{bad}",{data.draw(st.integers(0, 2))}'
                }.get(command, f'AT+{command}="{bad}"')
        if command == "QFMOV":
            good = self.form(data, data.draw(names, label="other name"))
            line = (f'AT+QFMOV="{bad}","{good}"' if data.draw(st.booleans(), label="bad first")
                    else f'AT+QFMOV="{good}","{bad}"')
        assert self.wire.cmd(line, bytewise) == cme(406), line

    # -- AT+QSSLCFG paths, reboot --------------------------------------------------------
    @rule(data=st.data(), option=st.sampled_from(SSL_PATH_OPTIONS), ctx=st.integers(0, 5), key=names)
    def ssl_path(self, data, option, ctx, key):
        path = self.form(data, key)
        assert self.wire.cmd(f'AT+QSSLCFG="{option}",{ctx},"{path}"') == OK
        self.ssl[option, ctx] = path

    @rule(option=st.sampled_from(SSL_PATH_OPTIONS), ctx=st.integers(0, 5))
    def ssl_path_query(self, option, ctx):
        want = f'\r\n+QSSLCFG: "{option}",{ctx},"{self.ssl.get((option, ctx), "")}"\r\n'.encode() + OK
        assert self.wire.cmd(f'AT+QSSLCFG="{option}",{ctx}') == want

    @precondition(lambda self: self.since_reboot >= REBOOT_EVERY)
    @rule()
    def reboot(self):
        self.since_reboot = 0
        self.wire.reboot(BOOT_URCS)
        self.files = {k: v for k, v in self.files.items() if k[0] == "UFS"}
        self.handles.clear()
        self.ssl.clear()

    @precondition(lambda self: self.since_reboot >= REBOOT_EVERY)
    @rule()
    def power_cycle(self):
        """The emulator started again on the same state dir (a new FileStore indexes UFS)."""
        self.since_reboot = 0
        self.wire.host.close()
        self.wire = self.rig.modem()
        self.files = {k: v for k, v in self.files.items() if k[0] == "UFS"}
        self.handles.clear()
        self.ssl.clear()

    def teardown(self):
        self.rig.close()

    @invariant()
    def answers_at(self):
        self.since_reboot += 1
        assert self.wire.cmd("AT") == OK


# -- machine 2: the ML302 certificate store ---------------------------------------------------

CTRL_Z, ESC = b"\x1a", b"\x1b"
MAX_CERT = 16384
cert_bytes = st.binary(min_size=1, max_size=2500).map(lambda b: b.replace(CTRL_Z, b"Z").replace(ESC, b"E"))


class Ml302CertStore(RuleBasedStateMachine):
    rig_root: Path
    rig_profile: str        # set by _run

    def __init__(self) -> None:
        super().__init__()
        self.rig = Rig(self.rig_root, self.rig_profile)
        self.wire = self.rig.modem()
        self.slots: dict[int, bytes] = {}
        self.since_reboot = 0

    def prompt(self, slot: int, bytewise: bool) -> bytes:
        self.wire.line(f"AT+QSECWRITE={slot}", bytewise)
        return self.wire.until(PROMPT_OR_FINAL)

    @rule(slot=st.integers(0, 2), content=cert_bytes, bytewise=st.booleans(), pieces=chunk_sizes,
          reading=chunk_sizes)
    def write(self, slot, content, bytewise, pieces, reading):
        self.wire.reading(reading)
        head = self.prompt(slot, bytewise)
        if slot in self.slots:
            assert head == cme(3), slot                        # refused before the prompt
            return
        assert head == b"\r\n> ", head
        self.wire.data(content + CTRL_Z, pieces)
        want = f"\r\n+QSECWRITE: {len(content)},{xor_checksum(content):04x}\r\n".encode() + OK
        assert self.wire.until(FINAL) == want, repr(b"|".join(self.wire.log))
        self.slots[slot] = content

    @rule(slot=st.integers(0, 2), content=st.binary(max_size=40).map(lambda b: b.replace(CTRL_Z, b"")))
    def write_cancelled(self, slot, content):
        head = self.prompt(slot, False)
        if slot in self.slots:
            assert head == cme(3), slot
            return
        assert head == b"\r\n> "
        self.wire.data(content.replace(ESC, b"") + ESC, [5])
        assert self.wire.until(FINAL) == OK                      # nothing stored

    @rule(slot=st.integers(0, 2), oversize=st.booleans())
    def write_empty_or_oversized(self, slot, oversize):
        head = self.prompt(slot, False)
        if slot in self.slots:
            assert head == cme(3), slot
            return
        assert head == b"\r\n> "
        self.wire.data((b"M" * (MAX_CERT + 1) if oversize else b"") + CTRL_Z, [4096])
        assert self.wire.until(FINAL) == cme(20 if oversize else 50)

    @rule(slot=st.integers(0, 2), bytewise=st.booleans())
    def read(self, slot, bytewise):
        answer = self.wire.cmd(f"AT+QSECREAD={slot}", bytewise)
        if slot in self.slots:
            assert answer == f"\r\n+QSECREAD: 1,{xor_checksum(self.slots[slot]):04x}\r\n".encode() + OK
        else:
            assert answer == cme(22), slot

    @rule(slot=st.integers(0, 2))
    def delete(self, slot):
        assert self.wire.cmd(f"AT+QSECDEL={slot}") == OK
        self.slots.pop(slot, None)

    @rule(line=st.sampled_from(["AT+QSECWRITE=3", "AT+QSECREAD=-1", "AT+QSECDEL=x", "AT+QSECREAD=0,1",
                                "AT+QSECWRITE=", "AT+QSECDEL=9"]))
    def bad_crtflag(self, line):
        assert self.wire.cmd(line) == cme(50), line

    @precondition(lambda self: self.since_reboot >= REBOOT_EVERY)
    @rule()
    def reboot(self):
        self.since_reboot = 0
        self.wire.reboot(b"\r\n+CPIN: READY\r\n")

    @precondition(lambda self: self.since_reboot >= REBOOT_EVERY)
    @rule()
    def power_cycle(self):
        """The emulator started again on the same state dir: the slots (and their key) persist."""
        self.since_reboot = 0
        self.wire.host.close()
        self.wire = self.rig.modem()

    def teardown(self):
        self.rig.close()

    @invariant()
    def answers_at(self):
        self.since_reboot += 1
        assert self.wire.cmd("AT") == OK


# -- the runs ----------------------------------------------------------------------------------

class Rig:
    """One BackgroundEmulator per example (stopped at its teardown: hundreds of examples'
    modems would otherwise hold more than select()'s 1024 descriptors) and its modems, each
    opened as tests/conftest.py's open_modem does (ATE0 sent)."""

    def __init__(self, root: Path, profile: str) -> None:
        self.root, self.profile = root, profile
        self.emulator = BackgroundEmulator(offline=True)
        self.emulator.start()
        self.hosts: list[Host] = []
        self.state_dir = root / f"{profile}-{next(_EXAMPLES)}"

    def modem(self) -> Wire:
        """A modem on this example's state dir: the first one, or the emulator started again."""
        port = self.emulator.add_modem(self.profile, manual_time=True, state_dir=self.state_dir)
        host = Host(port.path)
        self.hosts.append(host)
        self.emulator.run(port.port.look_for_host)
        assert host.at("ATE0").endswith(OK)
        return Wire(self.emulator, host, port)

    def close(self) -> None:
        for host in self.hosts:
            host.close()
        self.emulator.stop()


_EXAMPLES = itertools.count()


def _run(machine, root: Path, profile: str, examples: int, steps: int) -> None:
    class Bound(machine):
        rig_root, rig_profile = root, profile
    Bound.__name__ = machine.__name__
    run_state_machine_as_test(Bound, settings=settings(
        max_examples=examples, stateful_step_count=steps, deadline=None,
        suppress_health_check=list(HealthCheck)))


def test_ec2x_file_system_model(tmp_path, strict_log):
    _run(Ec2xFileSystem, tmp_path, "ec2x", examples=100, steps=200)


def test_ml302_cert_store_model(tmp_path, strict_log):
    _run(Ml302CertStore, tmp_path, "ml302", examples=40, steps=100)
