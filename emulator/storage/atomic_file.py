"""Crash-safe file writes shared by the EC2x file system and the ML302 cert store.

A modem's flash never shows half a file after a power cut, so neither may the
emulator's state directory after a kill: every write goes to a temporary file
in the same directory, is fsynced, and is moved over the target with
os.replace (atomic on POSIX). The directory is fsynced too so the rename
itself survives a crash.

Temporary names start with TEMP_PREFIX, which contains "..": the file-system
layer refuses ".." in any user file name, so a temp file can never collide
with, or be listed as, a file the host uploaded.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

__all__ = [
    "TEMP_PREFIX",
    "atomic_write",
    "create_exclusive",
    "fsync_directory",
    "read_plain",
    "remove_stale_temp_files",
    "why_unusable",
]

TEMP_PREFIX = "..tmp-"


def read_plain(path: Path) -> bytes:
    """The contents of a state file the emulator reads at start-up or a reset (settings,
    NV items, counters): OSError when something other than a regular file stands there.
    Opened non-blocking, so a FIFO someone left there cannot stop the one event loop (a
    blocking open waits for a writer forever, signals included)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a plain file", str(path))
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def fsync_directory(directory: Path) -> None:
    """Make a rename/unlink in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(directory: Path, data: bytes, mode: int) -> Path:
    """Write ``data`` to a fresh, fsynced temp file in ``directory``."""
    fd, temp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=directory)
    temp_path = Path(temp_name)
    try:
        # mkstemp creates 0600; set the wanted mode before any data lands.
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        _unlink_quietly(temp_path)
        raise
    return temp_path


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so a crash leaves the old or the new file.

    Raises OSError (after removing its temp file) if anything fails.
    """
    directory = path.parent
    temp_path = _write_temp(directory, data, mode)
    try:
        os.replace(temp_path, path)
    except BaseException:
        _unlink_quietly(temp_path)
        raise
    fsync_directory(directory)


def create_exclusive(path: Path, data: bytes, mode: int = 0o600) -> bool:
    """Create ``path`` with ``data`` only if it does not exist yet.

    Returns False if another writer got there first. os.link refuses to
    overwrite, so two processes racing to create the same file (e.g. the
    cert store's key) never end up with different contents.
    """
    directory = path.parent
    temp_path = _write_temp(directory, data, mode)
    try:
        os.link(temp_path, path)
    except FileExistsError:
        return False
    finally:
        _unlink_quietly(temp_path)
    fsync_directory(directory)
    return True


def why_unusable(directory: Path, exc: OSError) -> str:
    """Why a store's directory could not be made or read, in words: mkdir's "File exists"
    means something else stands at that path."""
    if isinstance(exc, FileExistsError) and not directory.is_dir():
        return "it is not a directory"
    return str(exc.strerror or exc)


def remove_stale_temp_files(directory: Path) -> int:
    """Delete temp files a crashed writer left behind; return how many."""
    removed = 0
    for entry in directory.iterdir():
        if entry.name.startswith(TEMP_PREFIX):
            _unlink_quietly(entry)
            removed += 1
    return removed


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
