"""The ML302 certificate store behind AT+QSECWRITE / QSECREAD / QSECDEL.

The ML302 manual (sections 2.2-2.4) describes three slots, selected by
<crtflag>: 0 the CA certificate, 1 the client certificate, 2 the client key.
The module keeps them encrypted, stores the XOR checksum computed at write
time, and on AT+QSECREAD recomputes the checksum of what it holds and reports
whether it still matches ("+QSECREAD: <good>,<checksum>"). The host can never
read the bytes back, so there is deliberately no AT-facing read here: load()
exists only for the TLS engine. A filled slot must be deleted before it can be
written again (the manual: "if it already exists, delete it first").
AT+QSSLCFG names the slots by path: "/caCrt.pem", "/clientCrt.pem",
"/privateKey.pem" (slot_for_path).

At rest (state_dir given) each slot is one file <state_dir>/secstore/slotN.bin:

    offset  size  field
    0       4     magic b"ML3S"
    4       1     format version (1)
    5       1     slot number
    6       2     checksum computed at write time, big-endian
    8       4     plaintext length, big-endian
    12      12    AES-GCM nonce
    24      ...   AES-256-GCM ciphertext + 16-byte tag; AAD = bytes 0..23

Binding the header as AAD means a flipped checksum, length or slot number
fails authentication just like a flipped ciphertext byte. The 256-bit key is
per emulated modem, random, and kept beside the slots in
<state_dir>/secstore/device.key (mode 0600), created on the first write.
Every file is written atomically (temp file + fsync + os.replace), so a kill
mid-write leaves the old or the new content.

Damage is reported, never raised: status() answers good=0 for a truncated,
garbled or undecryptable slot, with the checksum from its header (0 if the
header itself is unreadable). A missing or corrupt key makes every existing
slot good=0 and load() None; the next write() then creates a fresh key, so the
host recovers the way it would on the real module: delete, then write again.
With state_dir=None the same encrypted blobs are kept in memory (tests).

Refusals are SecStoreError subclasses; each carries `cme`, the +CME ERROR code
the AT layer answers when a handler lets it through (3GPP TS 27.007 numbers;
commands/secstore.py says why each).  Every call comes from the modem's event
loop thread, so the store holds no lock.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from emulator.storage.atomic_file import (
    atomic_write,
    create_exclusive,
    fsync_directory,
    remove_stale_temp_files,
    why_unusable,
)
from emulator.storage.checksum import xor16

__all__ = [
    "SLOT_CA_CERT",
    "SLOT_CLIENT_CERT",
    "SLOT_CLIENT_KEY",
    "SLOTS",
    "SLOT_PATHS",
    "SecStore",
    "SecStoreError",
    "SlotEmpty",
    "SlotOccupied",
    "InvalidSlot",
    "slot_for_path",
]

DIRECTORY = "secstore"              # under the state dir
SLOT_CA_CERT = 0
SLOT_CLIENT_CERT = 1
SLOT_CLIENT_KEY = 2
SLOTS = (SLOT_CA_CERT, SLOT_CLIENT_CERT, SLOT_CLIENT_KEY)

# The fixed names AT+QSSLCFG uses for the slots (ML302 manual, section 2.1).
SLOT_PATHS: dict[int, str] = {
    SLOT_CA_CERT: "/caCrt.pem",
    SLOT_CLIENT_CERT: "/clientCrt.pem",
    SLOT_CLIENT_KEY: "/privateKey.pem",
}
_PATH_TO_SLOT = {path: slot for slot, path in SLOT_PATHS.items()}

_MAGIC = b"ML3S"
_VERSION = 1
_HEADER = struct.Struct(">4sBBHI12s")  # magic, version, slot, checksum, length, nonce
_KEY_BYTES = 32
_KEY_NAME = "device.key"


class SecStoreError(Exception):
    """Base class of the cert store's refusals; as such, a host storage failure."""
    cme = 23          # memory failure


class SlotOccupied(SecStoreError):
    """write() to a filled slot: the manual requires AT+QSECDEL first."""
    cme = 3           # operation not allowed


class SlotEmpty(SecStoreError):
    """status()/delete() of a slot that holds nothing."""
    cme = 22          # not found


class InvalidSlot(SecStoreError, ValueError):
    """A <crtflag> outside 0-2."""
    cme = 50          # incorrect parameters


def slot_for_path(path: str) -> int | None:
    """Slot named by an AT+QSSLCFG path ("/caCrt.pem" -> 0), or None.

    Surrounding blanks are ignored: the manual itself prints "" /clientCrt.pem"".
    """
    return _PATH_TO_SLOT.get(path.strip())


def _slot_file(slot: int) -> str:
    return f"slot{slot}.bin"


class _MemoryBlobs:
    """Named byte blobs in a dict: the in-memory stand-in for the directory."""

    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}

    def get(self, name: str) -> bytes | None:
        return self._blobs.get(name)

    def put(self, name: str, data: bytes) -> None:
        self._blobs[name] = data

    def create(self, name: str, data: bytes) -> bool:
        return self._blobs.setdefault(name, data) is data

    def delete(self, name: str) -> bool:
        return self._blobs.pop(name, None) is not None


class _DirectoryBlobs:
    """Named byte blobs as files in one private directory, written atomically."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        remove_stale_temp_files(directory)

    def get(self, name: str) -> bytes | None:
        """The blob, None when there is none; b"" when something other than a regular file
        stands there (a FIFO, a device: never opened blocking, which would stop the event
        loop); OSError (ENOENT too) when the store's directory itself is gone."""
        try:
            fd = os.open(self._directory / name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            if not self._directory.is_dir():
                raise                   # (the store is gone, not this blob: a host failure)
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return b""              # a symlink planted there: filled, and damaged
            raise
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                return b""
            return handle.read()

    def put(self, name: str, data: bytes) -> None:
        atomic_write(self._directory / name, data, mode=0o600)

    def create(self, name: str, data: bytes) -> bool:
        return create_exclusive(self._directory / name, data, mode=0o600)

    def delete(self, name: str) -> bool:
        try:
            (self._directory / name).unlink()
        except FileNotFoundError:
            if not self._directory.is_dir():
                raise                   # (the store is gone: a host failure, not "empty")
            return False
        fsync_directory(self._directory)  # make the deletion itself durable
        return True


class SecStore:
    """The three encrypted ML302 certificate/key slots."""

    paths = SLOT_PATHS
    slot_for_path = staticmethod(slot_for_path)

    def __init__(self, state_dir: Path | None) -> None:
        self._blobs: _MemoryBlobs | _DirectoryBlobs
        if state_dir is None:
            self._blobs = _MemoryBlobs()
        else:
            try:
                self._blobs = _DirectoryBlobs(Path(state_dir) / DIRECTORY)
            except OSError as exc:      # (made at the first store command; the next tries again)
                where = Path(state_dir) / DIRECTORY
                raise SecStoreError(f"the certificate store {where} cannot be read: "
                                    f"{why_unusable(where, exc)}") from exc

    # -- key -----------------------------------------------------------------

    def _read_key(self) -> bytes | None:
        """The device key, or None if it is missing or corrupt (not 32 bytes, a directory).
        SecStoreError (a host storage failure) if it is there but cannot be read now (no
        permission, no descriptor left): an unreadable key is not a damaged one, and
        replacing it would lose every slot it protects."""
        try:
            key = self._blobs.get(_KEY_NAME)
        except IsADirectoryError:
            return None
        except OSError as exc:
            raise SecStoreError(f"cannot read the store's key: {exc.strerror or exc}") from exc
        return key if key is not None and len(key) == _KEY_BYTES else None

    def _key_for_writing(self) -> bytes:
        key = self._read_key()
        if key is not None:
            return key
        new_key = AESGCM.generate_key(bit_length=_KEY_BYTES * 8)
        # Exclusive create first, so two emulator processes sharing a
        # state_dir can never end up encrypting under different keys.
        if self._blobs.create(_KEY_NAME, new_key):
            return new_key
        key = self._read_key()
        if key is not None:
            return key
        # The key file exists but is corrupt: the slots it protected are lost
        # already (they report good=0), so replacing it loses nothing more.
        self._blobs.put(_KEY_NAME, new_key)
        return new_key

    # -- slots ---------------------------------------------------------------

    @staticmethod
    def _check_slot(slot: int) -> None:
        # type() not isinstance(): True and 0.0 compare equal to slot numbers.
        if type(slot) is not int or slot not in SLOTS:
            raise InvalidSlot(f"no such slot: {slot!r} (valid: 0-2)")

    def _read_blob(self, slot: int) -> bytes | None:
        """The slot's stored blob; b"" when something else stands there (a directory:
        filled, and damaged).  SecStoreError (a host storage failure, 23) when the store
        cannot be read now (no permission, no descriptor left): the slot may be empty or
        filled, and neither answer may be given for it."""
        try:
            return self._blobs.get(_slot_file(slot))
        except IsADirectoryError:
            return b""
        except OSError as exc:
            raise SecStoreError(f"cannot read slot {slot}: {exc.strerror or exc}") from exc

    def is_filled(self, slot: int) -> bool:
        self._check_slot(slot)
        return self._read_blob(slot) is not None

    def write(self, slot: int, data: bytes) -> tuple[int, int]:
        """Encrypt and store ``data``; return (size, checksum) for +QSECWRITE."""
        self._check_slot(slot)
        plaintext = bytes(data)
        checksum = xor16(plaintext)
        if self._read_blob(slot) is not None:
            raise SlotOccupied(f"slot {slot} is filled; delete it first")
        try:
            key = self._key_for_writing()
            nonce = os.urandom(12)
            header = _HEADER.pack(_MAGIC, _VERSION, slot, checksum, len(plaintext), nonce)
            ciphertext = AESGCM(key).encrypt(nonce, plaintext, header)
            self._blobs.put(_slot_file(slot), header + ciphertext)
        except OSError as exc:
            raise SecStoreError(f"cannot store slot {slot}: {exc}") from exc
        return len(plaintext), checksum

    def _decrypt(self, slot: int, blob: bytes) -> tuple[bytes | None, int]:
        """(plaintext or None if damaged, checksum stored in the header)."""
        if len(blob) < _HEADER.size:
            # Too short for a header; salvage the checksum if its bytes survived.
            intact = len(blob) >= 8 and blob[:5] == _MAGIC + bytes([_VERSION])
            return None, (int.from_bytes(blob[6:8], "big") if intact else 0)
        magic, version, stored_slot, checksum, length, nonce = _HEADER.unpack_from(blob)
        if magic != _MAGIC or version != _VERSION:
            return None, 0
        key = self._read_key()
        if key is None or stored_slot != slot:
            return None, checksum
        header = blob[: _HEADER.size]
        try:
            plaintext = AESGCM(key).decrypt(nonce, blob[_HEADER.size :], header)
        except InvalidTag:
            return None, checksum
        if len(plaintext) != length:
            return None, checksum
        return plaintext, checksum

    def status(self, slot: int) -> tuple[int, int]:
        """(good, checksum) for +QSECREAD; raises SlotEmpty (InvalidSlot for a bad slot
        number, SecStoreError when the store cannot be read now).

        good is 1 when the decrypted content's checksum equals the one stored
        at write time. When the content cannot be recovered the stored
        checksum is reported with good=0.
        """
        self._check_slot(slot)
        blob = self._read_blob(slot)
        if blob is None:
            raise SlotEmpty(f"slot {slot} is empty")
        plaintext, stored = self._decrypt(slot, blob)
        if plaintext is None:
            return 0, stored
        recomputed = xor16(plaintext)
        return (1 if recomputed == stored else 0), recomputed

    def load(self, slot: int) -> bytes | None:
        """The slot's bytes for the TLS engine; None if empty or damaged (SecStoreError
        when the store cannot be read now).

        Never expose this through an AT command: the module cannot read
        certificates back.
        """
        self._check_slot(slot)
        blob = self._read_blob(slot)
        if blob is None:
            return None
        plaintext, stored = self._decrypt(slot, blob)
        if plaintext is None or xor16(plaintext) != stored:
            return None
        return plaintext

    def delete(self, slot: int) -> None:
        """Empty the slot (AT+QSECDEL); SlotEmpty if it holds nothing."""
        self._check_slot(slot)
        try:
            deleted = self._blobs.delete(_slot_file(slot))
        except OSError as exc:
            raise SecStoreError(f"cannot delete slot {slot}: {exc}") from exc
        if not deleted:
            raise SlotEmpty(f"slot {slot} is empty")
