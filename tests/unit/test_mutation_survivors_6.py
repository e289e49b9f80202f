"""Tests from a manual mutation-testing pass over the EC2x file system and its AT commands
(emulator/storage/vfs.py: names, sizes, capacity, free space; emulator/storage/handles.py: the
open files; emulator/commands/files.py: AT+QFUPL / QFLST / QFDEL / QFDWL / QFLDS / QFMOV and
AT+QFOPEN / QFREAD / QFWRITE / QFSEEK / QFPOSITION / QFTUCAT / QFCLOSE).  Each test pins a
behaviour that a small change to those modules (the mutant named in its docstring) left the
storage unit tests and the file e2e tests passing on; the expected values come from
docs/behaviour.md ("Files (EC2x, AT+QFUPL & co.)") and the Quectel FILE notes quoted there,
not from the emulator's current output.  No pty: a FileStore / OpenFiles directly, or a
sans-IO EC2x Modem fed bytes (its clock is manual)."""
from __future__ import annotations

import pytest

from emulator.modem.modem import Modem
from emulator.modem.profile import load_profile
from emulator.storage.vfs import FileError, FileStore


class Ec2x:
    """An EC2x Modem with no port (ATE0 sent): .run(bytes) feeds them and returns the output
    since the last call; state_dir: UFS on disk under it."""

    def __init__(self, state_dir=None) -> None:
        self.out = bytearray()
        self.modem = Modem(load_profile("ec2x"), state_dir=state_dir)
        self.modem.interpreter.strict = True
        self.modem.attach(self.out.extend)
        assert self.run(b"ATE0\r") == b"ATE0\r\r\nOK\r\n"

    def run(self, data: bytes = b"") -> bytes:
        if data:
            self.modem.feed(data)
        out = bytes(self.out)
        self.out.clear()
        return out


@pytest.fixture
def ec2x() -> Ec2x:
    return Ec2x()


def cme(code: int) -> bytes:
    return b"\r\n+CME ERROR: %d\r\n" % code


def refused(call, code: int) -> None:
    with pytest.raises(FileError) as info:
        call()
    assert info.value.code == code, info.value


# -- names (vfs._check_basename, FileStore._split) --------------------------------------------
def test_every_printable_ascii_character_but_the_separators_is_a_name_character():
    """Mutant: `" " <= char < "~"` (the last printable character refused).  docs/behaviour.md
    refuses only what could leave the storage (`..`, `/`, `\\`, control characters, ...):
    "~" and "!" -- the two ends of printable ASCII after the space -- are name characters."""
    store = FileStore(None, 1000, 1000)
    assert store.parse_name("UFS:~backup~") == ("UFS", "~backup~")
    assert store.parse_name("RAM:!x") == ("RAM", "!x")
    store.write("a~b", b"1")
    assert store.list() == [("a~b", 1)]



@pytest.mark.parametrize("name", ["a..b", "x..", "RAM:cert..pem", "UFS:a.b..c"])
def test_two_dots_anywhere_in_a_name_are_refused(name):
    """Mutant: `basename.startswith("..")` for `".." in basename`.  docs/behaviour.md lists
    `..` among what a name may not hold (406), wherever it is -- it also keeps a host's names
    apart from the atomic writer's "..tmp-" temporary files -- and nothing is written."""
    store = FileStore(None, 1000, 1000)
    refused(lambda: store.parse_name(name), 406)
    refused(lambda: store.write(name, b"x"), 406)
    assert store.list() == [] and store.list("RAM:*") == []


# -- patterns (vfs._wildcard_regex) -----------------------------------------------------------
def test_a_question_mark_is_exactly_one_character():
    """Mutant: "?" translated to ".?" (none or one character).  docs/behaviour.md / the note:
    AT+QFLST and AT+QFDEL patterns take "*" (any run) and "?" (one character): "ca?.pem" is
    not "ca.pem", and AT+QFDEL="RAM:a?" leaves "RAM:a" alone."""
    store = FileStore(None, 1000, 1000)
    for name in ("ca.pem", "cab.pem", "cabc.pem", "RAM:a", "RAM:ab"):
        store.write(name, b"1")
    assert store.list("ca?.pem") == [("cab.pem", 1)]
    assert store.list("RAM:a?") == [("RAM:ab", 1)]
    assert store.delete_matching("RAM:a?") == 1 and store.list("RAM:*") == [("RAM:a", 1)]
    assert store.delete_matching("RAM:?") == 1 and store.list("RAM:*") == []
    assert store.list("?") == [] and store.list("*") == [("ca.pem", 1), ("cab.pem", 1), ("cabc.pem", 1)]


# -- ranged reads (FileStore.read) --------------------------------------------------------------
@pytest.mark.parametrize("name", ["RAM:r.bin", "UFS:r.bin"])
@pytest.mark.parametrize("on_disk", [False, True], ids=["memory", "directory"])
def test_a_ranged_read_starts_at_its_offset_on_either_drive(tmp_path, on_disk, name):
    """Mutant: _MemoryDrive.read answering the whole file whenever `length` is None or
    covers the file, whatever the offset.  FileStore.read(name, offset, length): `length`
    bytes (None: the rest) from `offset` -- the same on the RAM drive as on the UFS
    directory, a length past the end giving what is left."""
    store = FileStore(tmp_path if on_disk else None, 100, 100)
    store.write(name, b"0123456789")
    assert store.read(name, 3) == b"3456789"
    assert store.read(name, 3, None) == b"3456789"
    assert store.read(name, 8, 10) == b"89"
    assert store.read(name, 1, 50) == b"123456789"
    assert store.read(name, 0, 4) == b"0123" and store.read(name) == b"0123456789"

# -- the UFS directory (vfs._DirectoryDrive) ---------------------------------------------------
def test_a_regular_file_with_a_name_the_modem_cannot_make_is_not_a_modem_file(tmp_path):
    """Mutant: _DirectoryDrive indexing every regular file of <state-dir>/ufs/ without checking
    its name.  Only names the modem could have created are modem files: one it would refuse
    (406: trailing space, over 80 characters, a control character) is neither listed, nor
    counted in AT+QFLDS, nor taken from the drive's space."""
    ufs = tmp_path / "ufs"
    ufs.mkdir()
    for foreign in ("trailing ", " leading", "x" * 81, "tab\there", "dot..dot"):
        (ufs / foreign).write_bytes(b"1234567890")
    (ufs / "good.pem").write_bytes(b"good")
    store = FileStore(tmp_path, 100, 100)
    assert store.list() == [("good.pem", 4)]
    assert store.usage("UFS") == (4, 1)
    assert store.space("UFS") == (96, 100)
    store.write("big", b"b" * 96)                             # the foreign files take no room


def test_a_symlink_planted_after_start_is_file_not_found(tmp_path):
    """Mutant: FileStore.read answering every OSError 411 (read failed), the ELOOP of a symlink
    that O_NOFOLLOW refused included.  A symlink is never a modem file (the start-up index skips
    it as "not found", 405), and one planted under a known name reads as the same 405 --
    never the target's bytes."""
    store = FileStore(tmp_path, 1000, 1000)
    store.write("a.pem", b"mine")
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"host secret")
    target = tmp_path / "ufs" / "a.pem"
    target.unlink()
    target.symlink_to(secret)
    refused(lambda: store.read("a.pem"), 405)



def test_deleting_a_ufs_file_removed_behind_the_modems_back_succeeds(tmp_path):
    """Mutant: _DirectoryDrive.delete re-raising FileNotFoundError (418, delete failed).  A
    file someone removed from <state-dir>/ufs/ while the modem ran is still in its index;
    AT+QFDEL of it ends with the file gone -- OK, not 418 --, and it is listed no more
    (a 418 would keep it listed for good)."""
    store = FileStore(tmp_path, 100, 100)
    store.write("a.pem", b"abc")
    store.write("b.pem", b"def")
    (tmp_path / "ufs" / "a.pem").unlink()
    (tmp_path / "ufs" / "b.pem").unlink()
    store.delete("a.pem")
    assert store.delete_matching("b*") == 1
    assert store.list() == [] and store.space("UFS") == (100, 100)


# -- AT+QFUPL / AT+QFWRITE defaults (commands/files.py) ----------------------------------------
def test_qfupl_without_a_size_takes_exactly_10240_bytes(ec2x):
    """Mutant: DEFAULT_SIZE 10241.  docs/behaviour.md: AT+QFUPL's <file_size> defaults to
    10240 bytes (the note's parameter table): the 10240th byte ends the upload at once -- no
    wait for the timeout --, and the next bytes are a command line again."""
    body = bytes(range(256)) * 40
    assert ec2x.run(b'AT+QFUPL="RAM:d.bin"\r') == b"\r\nCONNECT\r\n"
    assert ec2x.run(body[:-1]) == b""
    out = ec2x.run(body[-1:])
    assert out.startswith(b"\r\n+QFUPL: 10240,") and out.endswith(b"\r\nOK\r\n")
    assert ec2x.run(b'AT+QFLST="RAM:*"\r') == b'\r\n+QFLST: "RAM:d.bin",10240\r\n\r\nOK\r\n'


def test_qfwrite_without_a_length_takes_exactly_10240_bytes(ec2x):
    """Mutant: DEFAULT_SIZE 10241 (AT+QFWRITE's default too).  docs/behaviour.md:
    AT+QFWRITE=<handle> takes 10240 bytes, as AT+QFUPL: the 10240th ends the write with
    +QFWRITE: 10240,10240."""
    assert ec2x.run(b'AT+QFOPEN="RAM:w.bin",1\r') == b"\r\n+QFOPEN: 1027\r\n\r\nOK\r\n"
    assert ec2x.run(b"AT+QFWRITE=1027\r") == b"\r\nCONNECT\r\n"
    assert ec2x.run(b"w" * 10239) == b""
    assert ec2x.run(b"w") == b"\r\n+QFWRITE: 10240,10240\r\n\r\nOK\r\n"


@pytest.mark.parametrize("command", [b'AT+QFUPL="RAM:t",10', b"AT+QFWRITE=1027,10"])
def test_the_data_phase_idle_timeout_defaults_to_5_seconds(ec2x, command):
    """Mutants: DEFAULT_TIMEOUT 6; AT+QFWRITE's <timeout> defaulting to 10.  docs/behaviour.md:
    AT+QFUPL and AT+QFWRITE default to 5 s, counted as idle time (restarted by every byte):
    what came is kept and reported once 5 s pass without a byte, not before."""
    assert ec2x.run(b'AT+QFOPEN="RAM:w",1\r') == b"\r\n+QFOPEN: 1027\r\n\r\nOK\r\n"
    assert ec2x.run(command + b"\r") == b"\r\nCONNECT\r\n"
    ec2x.modem.timers.advance(4.0)
    assert ec2x.run(b"abc") == b""
    ec2x.modem.timers.advance(4.9)                       # 8.9 s in all, 4.9 s idle
    assert ec2x.run() == b""
    ec2x.modem.timers.advance(0.2)
    expected = b"+QFUPL: 3,262" if command.startswith(b"AT+QFUPL") else b"+QFWRITE: 3,3"
    assert ec2x.run() == b"\r\n" + expected + b"\r\n\r\nOK\r\n"


# -- the open-file commands (commands/files.py, storage/handles.py) ----------------------------
@pytest.mark.parametrize("command", [b"AT+QFREAD=0", b"AT+QFREAD=0,1", b"AT+QFWRITE=0,1", b"AT+QFSEEK=0,0",
                                     b"AT+QFPOSITION=0", b"AT+QFTUCAT=0", b"AT+QFCLOSE=0"])
def test_handle_0_is_an_unknown_handle_416(ec2x, command):
    """Mutant: the handle's range starting at 1 (`args.int(0, 1, HANDLE_MAX)`), so handle 0
    is a bad parameter (400).  0 is a number the handle's 4-byte type holds; no file has it
    open (the EC2x's handles start at 1027): docs/behaviour.md, "an unknown handle is 416
    everywhere", before any CONNECT."""
    assert ec2x.run(b'AT+QFOPEN="RAM:f",1\r') == b"\r\n+QFOPEN: 1027\r\n\r\nOK\r\n"
    ec2x.run(b"AT+CMEE=1\r")
    assert ec2x.run(command + b"\r") == cme(416)
    assert ec2x.run(b"AT+QFPOSITION=1027\r") == b"\r\n+QFPOSITION: 0\r\n\r\nOK\r\n"


def test_the_same_name_on_the_other_drive_is_another_file(ec2x):
    """Mutant: OpenFiles.is_open matching the basename only, whatever the drive.  "RAM:x" and
    "x" (UFS) are two files: one open does not make the other 426 for AT+QFOPEN, AT+QFDEL,
    AT+QFDWL or AT+QFMOV (docs/behaviour.md: 426 is for the file open "by any of ITS names")."""
    ec2x.run(b"AT+CMEE=1\r")
    assert ec2x.run(b'AT+QFUPL="x",2\r') == b"\r\nCONNECT\r\n"
    assert ec2x.run(b"uu").endswith(b"OK\r\n")
    assert ec2x.run(b'AT+QFUPL="y",1\r') == b"\r\nCONNECT\r\n"
    assert ec2x.run(b"y").endswith(b"OK\r\n")
    assert ec2x.run(b'AT+QFOPEN="RAM:x",1\r') == b"\r\n+QFOPEN: 1027\r\n\r\nOK\r\n"
    assert ec2x.run(b'AT+QFDWL="x"\r') == b"\r\nCONNECT\r\nuu\r\n+QFDWL: 2,7575\r\n\r\nOK\r\n"
    assert ec2x.run(b'AT+QFMOV="y","UFS:x",1,1\r') == b"\r\nOK\r\n"
    assert ec2x.run(b'AT+QFOPEN="UFS:x",2\r') == b"\r\n+QFOPEN: 1028\r\n\r\nOK\r\n"
    assert ec2x.run(b'AT+QFDEL="RAM:x"\r') == cme(426)          # this one is open
    assert ec2x.run(b"AT+QFCLOSE=1028\r") == b"\r\nOK\r\n"
    assert ec2x.run(b'AT+QFDEL="x"\r') == b"\r\nOK\r\n"
    assert ec2x.run(b'AT+QFDEL="*"\r') == b"\r\nOK\r\n"
    assert ec2x.run(b"AT+QFOPEN?\r") == b'\r\n+QFOPEN: "RAM:x",1027,1\r\n\r\nOK\r\n'


def test_qfopen_read_lists_the_handles_in_order_after_a_lower_one_is_reused(ec2x):
    """Mutant: OpenFiles.listing in the order the handles were opened.  AT+QFOPEN? lists the
    open files by handle (emulator/storage/handles.py); a freed handle is given again first
    (docs/behaviour.md: "the lowest free one first"), so the newest file can hold the
    lowest handle and comes first."""
    for name, handle in ((b"a", 1027), (b"b", 1028), (b"c", 1029)):
        assert ec2x.run(b'AT+QFOPEN="RAM:%s",1\r' % name) == b"\r\n+QFOPEN: %d\r\n\r\nOK\r\n" % handle
    assert ec2x.run(b"AT+QFCLOSE=1027\r") == b"\r\nOK\r\n"
    assert ec2x.run(b'AT+QFOPEN="d",0\r') == b"\r\n+QFOPEN: 1027\r\n\r\nOK\r\n"
    assert ec2x.run(b"AT+QFOPEN?\r") == (b'\r\n+QFOPEN: "d",1027,0\r\n+QFOPEN: "RAM:b",1028,1\r\n'
                                         b'+QFOPEN: "RAM:c",1029,1\r\n\r\nOK\r\n')


# -- AT+QFLDS (FileStore.space / usage) ---------------------------------------------------------
def test_qflds_takes_the_drive_with_its_colon_and_in_any_case(ec2x):
    """Mutant: AT+QFLDS's <name_type> limited to 3 characters.  The drive may be written as a
    file-name prefix ("UFS:", "ram:": FileStore.space, "a trailing ':' is fine"), answering
    free and total bytes of the profile's drives (EC2x: 11000000 UFS, 2000000 RAM)."""
    assert ec2x.run(b'AT+QFUPL="RAM:r",4\r') == b"\r\nCONNECT\r\n"
    assert ec2x.run(b"1234").endswith(b"OK\r\n")
    assert ec2x.run(b'AT+QFLDS="UFS:"\r') == b"\r\n+QFLDS: 11000000,11000000\r\n\r\nOK\r\n"
    assert ec2x.run(b'AT+QFLDS="ram:"\r') == b"\r\n+QFLDS: 1999996,2000000\r\n\r\nOK\r\n"
    assert ec2x.run(b'AT+QFLDS="Ram"\r') == b"\r\n+QFLDS: 1999996,2000000\r\n\r\nOK\r\n"


# -- AT+QFLST ------------------------------------------------------------------------------------
def test_qflst_of_an_empty_pattern_is_an_invalid_name(ec2x):
    """Mutant: AT+QFLST="" taken as the execution form (all of UFS).  An empty name is no file
    name (docs/behaviour.md: +CME ERROR: 406, as AT+QFDEL="" and AT+QFUPL="" are); only
    AT+QFLST without a parameter lists every UFS file."""
    assert ec2x.run(b'AT+QFUPL="u",1\r') == b"\r\nCONNECT\r\n"
    assert ec2x.run(b"u").endswith(b"OK\r\n")
    ec2x.run(b"AT+CMEE=1\r")
    assert ec2x.run(b'AT+QFLST=""\r') == cme(406)
    assert ec2x.run(b'AT+QFDEL=""\r') == cme(406)
    assert ec2x.run(b"AT+QFLST\r") == b'\r\n+QFLST: "u",1\r\n\r\nOK\r\n'
