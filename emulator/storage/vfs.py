"""The EC2x module's file system: the UFS (flash) and RAM drives.

The AT layer (AT+QFUPL/QFLST/QFDEL/QFDWL/QFLDS, and the open files of
emulator/storage/handles.py) and the TLS engine (which
reads "UFS:cacert.pem" and friends named by AT+QSSLCFG) sit on top of this.

Names are what the host writes: "UFS:cacert.pem", "RAM:cacert.pem", or a bare
"cacert.pem", which is UFS, Quectel's default drive. The drive prefix is
case-insensitive, the file name case-sensitive. A name is a flat file name on
a drive: anything that could escape the modem's storage (path separators,
"..", control characters, ...) is refused with FileError.

UFS survives a restart (files under <state_dir>/ufs/, written atomically);
RAM is lost on restart and on clear_ram() (the AT layer calls it on AT+CFUN
reset). With state_dir=None the UFS drive is kept in memory too (tests).
One FileStore owns a state_dir: it indexes the UFS directory once at start.
Every call comes from the modem's event loop thread, so the store holds no lock.

Errors are FileError with .code (also .cme), the number the modem answers as
"+CME ERROR: <code>" -- a handler lets it through and the AT interpreter answers
it -- and .text, its meaning from Quectel's FILE error table in
emulator/at/cme.py. Note there is no 404 and no 408: "file not found" is 405,
"invalid file name" 406, "file already existed" 407. Which code each failure
gets here:

    malformed or unsafe name, unknown drive   406 Invalid file name
    no such file                              405 File not found
    write(overwrite=False) onto a file        407 File already existed
    drive cannot hold the data / file count   403 Drive full
    host OS error writing / reading / deleting 409 / 411 / 418
    deleting a file a handle has open          426 File already opened
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path
from typing import Callable

from emulator.at.cme import cme_text
from emulator.storage.atomic_file import atomic_write, fsync_directory, remove_stale_temp_files, why_unusable

__all__ = [
    "FileError",
    "FileStore",
    "DRIVE_UFS",
    "DRIVE_RAM",
    "DRIVES",
]

DIRECTORY = "ufs"                   # the UFS drive, under the state dir
ERR_DRIVE_FULL = 403
ERR_NOT_FOUND = 405
ERR_INVALID_NAME = 406
ERR_ALREADY_EXISTS = 407
ERR_WRITE_FAILED = 409
ERR_READ_FAILED = 411
ERR_DELETE_FAILED = 418
ERR_DISK_INFO = 419                 # fail to get disk info
ERR_ALREADY_OPEN = 426

DRIVE_UFS = "UFS"
DRIVE_RAM = "RAM"
DRIVES = (DRIVE_UFS, DRIVE_RAM)


class FileError(Exception):
    """A file operation the modem would refuse with +CME ERROR: <code>."""

    def __init__(self, code: int, detail: str = "") -> None:
        self.code = code
        self.text = cme_text(code)
        self.detail = detail
        message = f"{code} {self.text}"
        super().__init__(f"{message}: {detail}" if detail else message)

    @property
    def cme(self) -> int:
        """The +CME ERROR code the AT layer answers (emulator.at.responses.cme_code)."""
        return self.code


def _check_basename(basename: str, max_len: int, allow_wildcards: bool) -> None:
    """Refuse any basename that is not one flat, printable file name."""
    if not basename:
        raise FileError(ERR_INVALID_NAME, "empty file name")
    if len(basename) > max_len:
        raise FileError(ERR_INVALID_NAME, f"file name longer than {max_len}")
    for char in basename:
        # Printable ASCII only: control characters (NUL included) would corrupt
        # AT responses and host paths; non-ASCII has no defined byte form here.
        if not " " <= char <= "~":
            raise FileError(ERR_INVALID_NAME, f"bad character {char!r}")
    if "/" in basename or "\\" in basename or ":" in basename:
        raise FileError(ERR_INVALID_NAME, "path separators are not allowed")
    if ".." in basename:
        # Also keeps user names apart from atomic_file.TEMP_PREFIX ("..tmp-").
        raise FileError(ERR_INVALID_NAME, '".." is not allowed')
    if basename == ".":
        raise FileError(ERR_INVALID_NAME, '"." is not a file name')
    if basename != basename.strip(" "):
        # "x.pem " and "x.pem" would be two files a person cannot tell apart.
        raise FileError(ERR_INVALID_NAME, "leading or trailing spaces")
    if not allow_wildcards and ("*" in basename or "?" in basename):
        raise FileError(ERR_INVALID_NAME, "wildcards only in list/delete patterns")


def _wildcard_regex(pattern: str) -> re.Pattern[str]:
    """fnmatch semantics for "*" and "?" only, case-sensitive.

    fnmatch would also treat "[...]" as a character class, which the modem does
    not; every other character therefore matches itself literally.
    """
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.DOTALL)


class _MountedDrive:
    """The UFS drive in <state-dir>/ufs/, read (mounted) when the file system is made.  A
    directory that cannot be read then (the state dir gone or a file, no permission, no
    descriptor left) leaves it unmounted: each UFS operation tries again and, until one
    succeeds, fails as a module's with a drive it cannot mount (419, fail to get disk info);
    the RAM drive works meanwhile."""

    def __init__(self, directory: Path, max_name_len: int) -> None:
        self._directory, self._max_name_len = directory, max_name_len
        self._drive: _DirectoryDrive | None = None
        try:
            self._mounted()
        except FileError:
            pass                        # (said by the operation that meets it)

    def _mounted(self) -> _DirectoryDrive:
        if self._drive is None:
            try:
                self._drive = _DirectoryDrive(self._directory, self._max_name_len)
            except OSError as exc:
                raise FileError(ERR_DISK_INFO, f"the UFS drive {self._directory} cannot be read: "
                                               f"{why_unusable(self._directory, exc)}") from exc
        return self._drive

    def sizes(self) -> dict[str, int]:
        return self._mounted().sizes()

    def read(self, basename: str, offset: int = 0, length: int | None = None) -> bytes:
        return self._mounted().read(basename, offset, length)

    def write(self, basename: str, data: bytes) -> None:
        self._mounted().write(basename, data)

    def rename(self, old: str, new: str) -> None:
        self._mounted().rename(old, new)

    def delete(self, basename: str) -> None:
        self._mounted().delete(basename)


class _MemoryDrive:
    """A drive whose files live in a dict (RAM, or UFS without state_dir)."""

    def __init__(self) -> None:
        self._files: dict[str, bytes] = {}

    def sizes(self) -> dict[str, int]:
        return {name: len(data) for name, data in self._files.items()}

    def read(self, basename: str, offset: int = 0, length: int | None = None) -> bytes:
        data = self._files[basename]
        if offset == 0 and (length is None or length >= len(data)):
            return data
        return data[offset:None if length is None else offset + length]

    def write(self, basename: str, data: bytes) -> None:
        self._files[basename] = data

    def delete(self, basename: str) -> None:
        del self._files[basename]

    def rename(self, old: str, new: str) -> None:
        self._files[new] = self._files.pop(old)

    def clear(self) -> None:
        self._files.clear()


class _DirectoryDrive:
    """A drive stored as one host file per modem file in a directory."""

    def __init__(self, directory: Path, max_name_len: int) -> None:
        self._directory = directory
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        remove_stale_temp_files(directory)
        self._sizes: dict[str, int] = {}
        for entry in directory.iterdir():
            # Only regular files with names the modem could have created are
            # modem files; anything else someone put there is ignored.
            if entry.is_symlink() or not entry.is_file():
                continue
            try:
                _check_basename(entry.name, max_name_len, allow_wildcards=False)
            except FileError:
                continue
            self._sizes[entry.name] = entry.stat().st_size

    def _path(self, basename: str) -> Path:
        path = self._directory / basename
        # Defence in depth: basenames are already validated as flat names.
        if path.parent != self._directory:
            raise FileError(ERR_INVALID_NAME, "name escapes the drive")
        return path

    def sizes(self) -> dict[str, int]:
        return dict(self._sizes)

    def read(self, basename: str, offset: int = 0, length: int | None = None) -> bytes:
        # O_NOFOLLOW: never follow a symlink someone planted in the drive; O_NONBLOCK: a FIFO
        # put there would block the open, and the event loop with it (refused below).
        fd = os.open(self._path(basename), os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise FileError(ERR_READ_FAILED, f"{basename} is not a regular file on the host")
            if offset:
                handle.seek(offset)
            return handle.read(-1 if length is None else length)

    def write(self, basename: str, data: bytes) -> None:
        atomic_write(self._path(basename), data, mode=0o600)
        self._sizes[basename] = len(data)

    def rename(self, old: str, new: str) -> None:
        # os.replace is atomic: a crash leaves the old name or the new one, never neither.
        os.replace(self._path(old), self._path(new))
        self._sizes[new] = self._sizes.pop(old)
        fsync_directory(self._directory)

    def delete(self, basename: str) -> None:
        try:
            self._path(basename).unlink()
        except FileNotFoundError:
            pass  # already gone: the index was stale, deleting is still done
        self._sizes.pop(basename, None)
        fsync_directory(self._directory)


class FileStore:
    """The EC2x UFS and RAM drives with Quectel's naming, limits and errors."""

    def __init__(
        self,
        state_dir: Path | None,
        ufs_capacity: int,
        ram_capacity: int,
        max_name_len: int = 80,
        max_files: int = 64,
    ) -> None:
        self._max_name_len = max_name_len
        self._max_files = max_files
        # (drive, basename) -> whether a handle has it open (emulator.storage.handles
        # sets it): such a file is not deleted.
        self.in_use: Callable[[str, str], bool] = lambda drive, basename: False
        self._capacity = {DRIVE_UFS: ufs_capacity, DRIVE_RAM: ram_capacity}
        ufs: _MemoryDrive | _MountedDrive
        if state_dir is None:
            ufs = _MemoryDrive()
        else:
            ufs = _MountedDrive(Path(state_dir) / DIRECTORY, max_name_len)
        self._drives: dict[str, _MemoryDrive | _MountedDrive] = {
            DRIVE_UFS: ufs,
            DRIVE_RAM: _MemoryDrive(),
        }

    # -- names ---------------------------------------------------------------

    def _split(self, name: str, allow_wildcards: bool) -> tuple[str, str]:
        if not isinstance(name, str):
            raise TypeError(f"file name must be str, not {type(name).__name__}")
        drive, colon, basename = name.partition(":")
        if not colon:
            drive, basename = DRIVE_UFS, name
        drive = drive.upper()
        if drive not in DRIVES:
            raise FileError(ERR_INVALID_NAME, f"unknown drive {name.partition(':')[0]!r}")
        _check_basename(basename, self._max_name_len, allow_wildcards)
        return drive, basename

    def parse_name(self, name: str) -> tuple[str, str]:
        """Split a host-written name into (drive, basename); refuse unsafe ones.

        >>> store.parse_name("ram:cacert.pem")  # doctest: +SKIP
        ('RAM', 'cacert.pem')
        """
        return self._split(name, allow_wildcards=False)

    @staticmethod
    def display_name(drive: str, basename: str) -> str:
        """The name as AT+QFLST prints it: UFS files bare, RAM files "RAM:x"."""
        return basename if drive == DRIVE_UFS else f"{drive}:{basename}"

    # -- single files --------------------------------------------------------

    def _used(self, drive: str) -> int:
        return sum(self._drives[drive].sizes().values())

    def check_writable(self, name: str, size: int, overwrite: bool = True) -> None:
        """Raise the FileError write() would raise for ``size`` bytes, or nothing.

        Lets AT+QFUPL refuse before it answers CONNECT and takes the data.
        """
        drive, basename = self.parse_name(name)
        sizes = self._drives[drive].sizes()
        old_size = sizes.get(basename)
        if old_size is not None and not overwrite:
            raise FileError(ERR_ALREADY_EXISTS, name)
        if old_size is None and len(sizes) >= self._max_files:
            raise FileError(ERR_DRIVE_FULL, f"{drive} holds {self._max_files} files")
        # The old file's space is reusable because it is being replaced.
        free = self._capacity[drive] - sum(sizes.values()) + (old_size or 0)
        if size > free:
            raise FileError(ERR_DRIVE_FULL, f"{size} bytes, {free} free on {drive}")

    def write(self, name: str, data: bytes, overwrite: bool = True) -> None:
        """Store ``data`` as ``name``, replacing an existing file by default."""
        payload = bytes(data)
        drive, basename = self.parse_name(name)
        self.check_writable(name, len(payload), overwrite)
        try:
            self._drives[drive].write(basename, payload)
        except OSError as exc:
            raise FileError(ERR_WRITE_FAILED, f"{name}: {exc.strerror}") from exc

    def read(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        """The file's bytes, or (an open file's AT+QFREAD) `length` of them (None: the
        rest) from `offset`: only those are read from the drive."""
        drive, basename = self.parse_name(name)
        if basename not in self._drives[drive].sizes():
            raise FileError(ERR_NOT_FOUND, name)
        try:
            return self._drives[drive].read(basename, offset, length)
        except (KeyError, FileNotFoundError) as exc:
            raise FileError(ERR_NOT_FOUND, name) from exc
        except OSError as exc:
            code = ERR_NOT_FOUND if exc.errno == errno.ELOOP else ERR_READ_FAILED
            raise FileError(code, f"{name}: {exc.strerror}") from exc

    def exists(self, name: str) -> bool:
        drive, basename = self.parse_name(name)
        return basename in self._drives[drive].sizes()

    def size(self, name: str) -> int:
        drive, basename = self.parse_name(name)
        try:
            return self._drives[drive].sizes()[basename]
        except KeyError:
            raise FileError(ERR_NOT_FOUND, name) from None

    def delete(self, name: str) -> None:
        drive, basename = self.parse_name(name)
        if basename not in self._drives[drive].sizes():
            raise FileError(ERR_NOT_FOUND, name)
        if self.in_use(drive, basename):
            raise FileError(ERR_ALREADY_OPEN, name)
        self._delete(drive, basename)

    def move(self, source: str, destination: str, copy: bool, overwrite: bool) -> None:
        """AT+QFMOV: `source` becomes `destination` (on the same or the other drive); with
        copy the source stays.  405 no source, 407 the destination exists and overwrite
        is off, 426 either file open, 403 no room.  A file moved onto itself: nothing."""
        src_drive, src_base = self.parse_name(source)
        dst_drive, dst_base = self.parse_name(destination)
        if src_base not in self._drives[src_drive].sizes():
            raise FileError(ERR_NOT_FOUND, source)
        if self.in_use(src_drive, src_base) or self.in_use(dst_drive, dst_base):
            raise FileError(ERR_ALREADY_OPEN, f"{source} -> {destination}")
        if (src_drive, src_base) == (dst_drive, dst_base):
            return
        if not copy and src_drive == dst_drive:
            # A rename: no new space and no new file on the drive.
            drive = self._drives[src_drive]
            if dst_base in drive.sizes() and not overwrite:
                raise FileError(ERR_ALREADY_EXISTS, destination)
            try:
                drive.rename(src_base, dst_base)
            except OSError as exc:
                raise FileError(ERR_WRITE_FAILED, f"{source} -> {destination}: {exc.strerror}") from exc
            return
        data = self.read(source)
        self.write(destination, data, overwrite=overwrite)
        if not copy:
            self._delete(src_drive, src_base)

    def _delete(self, drive: str, basename: str) -> None:
        try:
            self._drives[drive].delete(basename)
        except OSError as exc:
            raise FileError(ERR_DELETE_FAILED, f"{basename}: {exc.strerror}") from exc

    # -- patterns and drives -------------------------------------------------

    def _matching(self, pattern: str | None) -> tuple[str, list[str]]:
        """(drive, sorted basenames) selected by a QFLST/QFDEL pattern."""
        drive, basename_pattern = self._split(
            "*" if pattern is None else pattern, allow_wildcards=True
        )
        regex = _wildcard_regex(basename_pattern)
        names = self._drives[drive].sizes()
        return drive, sorted(n for n in names if regex.fullmatch(n))

    def delete_matching(self, pattern: str) -> int:
        """Delete every file the pattern selects ("*" = all UFS, "RAM:*" = all
        RAM); return how many. Zero matches is not an error here."""
        drive, basenames = self._matching(pattern)
        busy = [b for b in basenames if self.in_use(drive, b)]
        if busy:                             # none deleted: the host closes first
            raise FileError(ERR_ALREADY_OPEN, f"{pattern}: {busy[0]} is open")
        for basename in basenames:
            self._delete(drive, basename)
        return len(basenames)

    def space(self, drive: str) -> tuple[int, int]:
        """(free_bytes, total_bytes) of "UFS" or "RAM" (a trailing ":" is fine)."""
        key = self._drive_key(drive)
        total = self._capacity[key]
        return total - self._used(key), total

    def usage(self, drive: str) -> tuple[int, int]:
        """(bytes used by files, number of files): the AT+QFLDS execution form."""
        key = self._drive_key(drive)
        sizes = self._drives[key].sizes()
        return sum(sizes.values()), len(sizes)

    @staticmethod
    def _drive_key(drive: str) -> str:
        key = drive.upper().rstrip(":")
        if key not in DRIVES:
            raise FileError(ERR_INVALID_NAME, f"unknown drive {drive!r}")
        return key

    def clear_ram(self) -> None:
        """Forget every RAM file, as a module reset (AT+CFUN) does."""
        ram = self._drives[DRIVE_RAM]
        assert isinstance(ram, _MemoryDrive)
        ram.clear()

    # Defined last so the builtin "list" stays usable in the class body above.
    def list(self, pattern: str | None = None) -> list[tuple[str, int]]:
        """[(name as QFLST prints it, size)], sorted; None lists all of UFS."""
        drive, basenames = self._matching(pattern)
        sizes = self._drives[drive].sizes()
        return [(self.display_name(drive, b), sizes[b]) for b in basenames]
