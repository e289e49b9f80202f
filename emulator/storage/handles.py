"""Open files on a FileStore: the handles of AT+QFOPEN / QFREAD / QFWRITE / QFSEEK /
QFPOSITION / QFTUCAT / QFCLOSE (Quectel FILE notes; the choices where they are silent
are in docs/behaviour.md, "Files").

A handle is a number (the profile's files.first_handle and up, the lowest free one
first), a file, a mode and a position.  The bytes live in the FileStore only: every
write goes to the drive at once (UFS atomically), so a restart or a crash never tears a
file and AT+QFLST / AT+QSSLCFG see what was written.  Files are small (the drives hold a
few MB), so a write reads the file, splices and writes it back; a read takes only the
bytes it returns from the drive.

    mode 0  open, or create empty; read and write
    mode 1  create, or empty an existing one; read and write
    mode 2  read only; the file must exist (405)

Errors are FileError (their +CME code): 416 no such handle, 426 the file is open
already (QFOPEN twice, QFDEL / QFDWL of an open file), 413 too many open, 414 a
write or truncate through a read-only handle, 401 a seek past the end, 402 a read at
the end of the file.
"""
from __future__ import annotations

from dataclasses import dataclass

from emulator.storage.vfs import ERR_ALREADY_OPEN, ERR_NOT_FOUND, FileError, FileStore

ERR_TOO_LARGE_OFFSET = 401       # "Larger than the size of the file"
ERR_READ_ZERO = 402              # "Read zero byte"
ERR_TOO_MANY_OPEN = 413          # "Reach the max number of file allowed to be opened"
ERR_READ_ONLY = 414              # "The file read-only"
ERR_BAD_HANDLE = 416             # "Invalid file descriptor"

MODE_OPEN_OR_CREATE, MODE_CREATE_EMPTY, MODE_READ_ONLY = 0, 1, 2


@dataclass
class OpenFile:
    handle: int
    drive: str
    basename: str
    mode: int
    position: int = 0

    @property
    def name(self) -> str:
        """The name as the store takes it ("RAM:x" / "UFS:x")."""
        return f"{self.drive}:{self.basename}"


class OpenFiles:
    def __init__(self, store: FileStore, first_handle: int, max_open: int) -> None:
        self.store = store
        self.first_handle = first_handle
        self.max_open = max_open
        self._files: dict[int, OpenFile] = {}
        store.in_use = self.is_open          # QFDEL of an open file: 426

    def is_open(self, drive: str, basename: str) -> bool:
        return any(f.drive == drive and f.basename == basename for f in self._files.values())

    def is_open_name(self, name: str) -> bool:
        return self.is_open(*self.store.parse_name(name))

    def listing(self) -> list[OpenFile]:
        return [self._files[h] for h in sorted(self._files)]

    def open(self, name: str, mode: int) -> int:
        drive, basename = self.store.parse_name(name)
        if self.is_open(drive, basename):
            raise FileError(ERR_ALREADY_OPEN, name)
        if len(self._files) >= self.max_open:
            raise FileError(ERR_TOO_MANY_OPEN, f"{self.max_open} files open")
        full = f"{drive}:{basename}"
        exists = self.store.exists(full)
        if mode == MODE_READ_ONLY and not exists:
            raise FileError(ERR_NOT_FOUND, name)
        if mode == MODE_CREATE_EMPTY or (mode == MODE_OPEN_OR_CREATE and not exists):
            self.store.write(full, b"")
        handle = self.first_handle
        while handle in self._files:
            handle += 1
        self._files[handle] = OpenFile(handle, drive, basename, mode)
        return handle

    def get(self, handle: int) -> OpenFile:
        try:
            return self._files[handle]
        except KeyError:
            raise FileError(ERR_BAD_HANDLE, f"handle {handle}") from None

    def close(self, handle: int) -> None:
        self.get(handle)
        del self._files[handle]

    def close_all(self) -> None:
        self._files.clear()

    def _writable(self, handle: int) -> OpenFile:
        f = self.get(handle)
        if f.mode == MODE_READ_ONLY:
            raise FileError(ERR_READ_ONLY, f.name)
        return f

    def read(self, handle: int, length: int | None) -> bytes:
        """Up to `length` bytes (None: the rest) from the position, which moves past them.
        Nothing left to read: 402."""
        f = self.get(handle)
        size = self.store.size(f.name)
        end = size if length is None else min(size, f.position + length)
        if end <= f.position:
            raise FileError(ERR_READ_ZERO, f"{f.name} at {f.position} of {size}")
        chunk = self.store.read(f.name, f.position, end - f.position)
        if not chunk:                  # (the file shrank on the directory drive under us)
            raise FileError(ERR_READ_ZERO, f"{f.name} at {f.position}: nothing there")
        f.position += len(chunk)
        return chunk

    def check_write(self, handle: int, length: int) -> None:
        """What write() of `length` bytes would refuse, raised before CONNECT."""
        f = self._writable(handle)
        size = self.store.size(f.name)
        self.store.check_writable(f.name, max(size, f.position + length))

    def write(self, handle: int, data: bytes) -> tuple[int, int]:
        """`data` at the position (which moves past it): (written, the file's size)."""
        f = self._writable(handle)
        old = self.store.read(f.name)
        if not data:
            return 0, len(old)
        new = old[:f.position] + data + old[f.position + len(data):]
        self.store.write(f.name, new)
        f.position += len(data)
        return len(data), len(new)

    def seek(self, handle: int, offset: int, whence: int) -> None:
        """whence 0 from the start, 1 from the position, 2 back from the end; never past
        the end (401)."""
        f = self.get(handle)
        size = self.store.size(f.name)
        target = (offset, f.position + offset, size - offset)[whence]
        if not 0 <= target <= size:
            raise FileError(ERR_TOO_LARGE_OFFSET, f"{f.name}: {target} outside 0..{size}")
        f.position = target

    def position(self, handle: int) -> int:
        return self.get(handle).position

    def truncate(self, handle: int) -> None:
        f = self._writable(handle)
        data = self.store.read(f.name)
        if f.position < len(data):
            self.store.write(f.name, data[:f.position])
