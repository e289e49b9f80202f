"""Tests for emulator.storage.secstore: the ML302 encrypted cert/key slots."""

import os
import stat

import pytest

from emulator.storage.checksum import format_checksum, xor16
from emulator.storage.secstore import (
    SLOT_CA_CERT,
    SLOT_CLIENT_CERT,
    SLOT_CLIENT_KEY,
    InvalidSlot,
    SecStore,
    SecStoreError,
    SlotEmpty,
    SlotOccupied,
    slot_for_path,
)

CA_PEM = (
    b"-----BEGIN CERTIFICATE-----\n"
    + b"MIIBszCCAVmgAwIBAgIUQ2FDZXJ0Rm9yVGVzdGluZ09ubHkwCgYIKoZIzj0EAwIw\n" * 20
    + b"-----END CERTIFICATE-----\n"
)
ODD = b"\x12\x34\x56"  # 3 bytes: 0x1234 ^ 0x5600 = 0x4434


@pytest.fixture(params=["memory", "disk"])
def store(request, tmp_path):
    return SecStore(None if request.param == "memory" else tmp_path / "state")


@pytest.fixture
def state_dir(tmp_path):
    return tmp_path / "state"


def slot_path(state_dir, slot):
    return state_dir / "secstore" / f"slot{slot}.bin"


def key_path(state_dir):
    return state_dir / "secstore" / "device.key"


# -- paths ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "slot"),
    [
        ("/caCrt.pem", 0),
        ("/clientCrt.pem", 1),
        ("/privateKey.pem", 2),
        (" /clientCrt.pem", 1),  # the manual's own typo has a leading blank
        ("/cacrt.pem", None),  # case-sensitive
        ("caCrt.pem", None),
        ("UFS:cacert.pem", None),
        ("", None),
    ],
)
def test_slot_for_path(path, slot):
    assert slot_for_path(path) == slot
    assert SecStore.slot_for_path(path) == slot


def test_paths_attribute():
    assert SecStore.paths == {0: "/caCrt.pem", 1: "/clientCrt.pem", 2: "/privateKey.pem"}


# -- write / status / delete / load ----------------------------------------------


def test_write_returns_size_and_checksum(store):
    size, checksum = store.write(SLOT_CA_CERT, CA_PEM)
    assert size == len(CA_PEM)
    assert checksum == xor16(CA_PEM)


def test_manual_example_formats(store):
    # The manual prints "+QSECWRITE: 1388,384a" and "+QSECREAD: 1,553f":
    # decimal size, four lowercase hex digits.
    size, checksum = store.write(SLOT_CLIENT_KEY, b"\x38\x4a" + b"\x00" * 1386)
    assert f"+QSECWRITE: {size},{format_checksum(checksum)}" == "+QSECWRITE: 1388,384a"
    good, checksum = store.status(SLOT_CLIENT_KEY)
    assert f"+QSECREAD: {good},{format_checksum(checksum)}" == "+QSECREAD: 1,384a"


def test_odd_length_checksum(store):
    assert store.write(SLOT_CLIENT_CERT, ODD) == (3, 0x4434)
    assert store.status(SLOT_CLIENT_CERT) == (1, 0x4434)


def test_empty_data_is_storable(store):
    assert store.write(SLOT_CA_CERT, b"") == (0, 0)
    assert store.status(SLOT_CA_CERT) == (1, 0)
    assert store.load(SLOT_CA_CERT) == b""


def test_status_good_after_write(store):
    store.write(SLOT_CA_CERT, CA_PEM)
    assert store.status(SLOT_CA_CERT) == (1, xor16(CA_PEM))


def test_load_returns_plaintext(store):
    store.write(SLOT_CLIENT_KEY, b"key material")
    assert store.load(SLOT_CLIENT_KEY) == b"key material"
    assert store.load(SLOT_CA_CERT) is None


def test_slots_are_independent(store):
    store.write(0, b"ca")
    store.write(1, b"cert")
    store.write(2, b"key")
    assert [store.load(s) for s in (0, 1, 2)] == [b"ca", b"cert", b"key"]
    store.delete(1)
    assert [store.is_filled(s) for s in (0, 1, 2)] == [True, False, True]


def test_write_to_filled_slot_is_refused(store):
    store.write(SLOT_CA_CERT, b"first")
    with pytest.raises(SlotOccupied):
        store.write(SLOT_CA_CERT, b"second")
    assert store.load(SLOT_CA_CERT) == b"first"


def test_delete_then_write_again(store):
    store.write(SLOT_CA_CERT, b"first")
    store.delete(SLOT_CA_CERT)
    assert store.write(SLOT_CA_CERT, b"second") == (6, xor16(b"second"))
    assert store.load(SLOT_CA_CERT) == b"second"


def test_empty_slot(store):
    with pytest.raises(SlotEmpty):
        store.status(SLOT_CA_CERT)
    with pytest.raises(SlotEmpty):
        store.delete(SLOT_CA_CERT)
    assert store.load(SLOT_CA_CERT) is None
    assert not store.is_filled(SLOT_CA_CERT)


def test_errors_share_a_base_class():
    assert issubclass(SlotEmpty, SecStoreError) and issubclass(SlotOccupied, SecStoreError)


@pytest.mark.parametrize("slot", [-1, 3, True, "0", 0.0])
def test_invalid_slot(store, slot):
    for call in (store.status, store.delete, store.load, store.is_filled):
        with pytest.raises(InvalidSlot):
            call(slot)
    with pytest.raises(InvalidSlot):
        store.write(slot, b"x")
    assert issubclass(InvalidSlot, ValueError)


# -- at rest --------------------------------------------------------------------


def test_restart_keeps_slots(state_dir):
    SecStore(state_dir).write(SLOT_CLIENT_KEY, b"secret key")
    again = SecStore(state_dir)
    assert again.status(SLOT_CLIENT_KEY) == (1, xor16(b"secret key"))
    assert again.load(SLOT_CLIENT_KEY) == b"secret key"
    with pytest.raises(SlotOccupied):
        again.write(SLOT_CLIENT_KEY, b"other")


def test_plaintext_never_on_disk(state_dir):
    marker = b"PLAINTEXT-MARKER-0123456789"
    SecStore(state_dir).write(SLOT_CLIENT_KEY, marker * 4)
    for path in (state_dir / "secstore").iterdir():
        assert marker not in path.read_bytes()


def test_key_file_is_private_and_created_on_first_write(state_dir):
    store = SecStore(state_dir)
    assert not key_path(state_dir).exists()
    with pytest.raises(SlotEmpty):
        store.status(0)  # reading must not create the key
    assert store.load(0) is None
    assert not key_path(state_dir).exists()
    store.write(0, b"x")
    mode = stat.S_IMODE(key_path(state_dir).stat().st_mode)
    assert mode == 0o600
    assert len(key_path(state_dir).read_bytes()) == 32
    assert stat.S_IMODE(slot_path(state_dir, 0).stat().st_mode) == 0o600
    assert stat.S_IMODE((state_dir / "secstore").stat().st_mode) == 0o700


def test_one_key_per_modem_reused(state_dir):
    SecStore(state_dir).write(0, b"a")
    key = key_path(state_dir).read_bytes()
    SecStore(state_dir).write(1, b"b")
    assert key_path(state_dir).read_bytes() == key


def test_different_modems_have_different_keys(tmp_path):
    SecStore(tmp_path / "m1").write(0, b"same")
    SecStore(tmp_path / "m2").write(0, b"same")
    assert key_path(tmp_path / "m1").read_bytes() != key_path(tmp_path / "m2").read_bytes()


def test_same_plaintext_encrypts_differently(state_dir):
    store = SecStore(state_dir)
    store.write(0, b"same")
    first = slot_path(state_dir, 0).read_bytes()
    store.delete(0)
    store.write(0, b"same")
    assert slot_path(state_dir, 0).read_bytes() != first  # fresh nonce


# -- tampering ------------------------------------------------------------------


def tamper(state_dir, slot, change):
    path = slot_path(state_dir, slot)
    path.write_bytes(change(path.read_bytes()))


def flip(offset):
    def change(blob):
        b = bytearray(blob)
        b[offset] ^= 0x01
        return bytes(b)

    return change


@pytest.fixture
def written(state_dir):
    store = SecStore(state_dir)
    store.write(SLOT_CA_CERT, CA_PEM)
    return store


STORED = xor16(CA_PEM)


@pytest.mark.parametrize(
    ("change", "reported"),
    [
        (flip(-1), STORED),  # last tag byte
        (flip(30), STORED),  # a ciphertext byte
        (flip(5), STORED),  # slot number in the header
        (flip(9), STORED),  # stored length
        (flip(12), STORED),  # nonce
        (flip(6), STORED ^ 0x0100),  # the stored checksum itself
        (flip(0), 0),  # magic: header unreadable
        (flip(4), 0),  # version: header unreadable
        (lambda b: b[:-1], STORED),  # truncated tag
        (lambda b: b[:40], STORED),  # truncated ciphertext
        (lambda b: b[:10], STORED),  # truncated inside the header
        (lambda b: b[:3], 0),
        (lambda b: b"", 0),
        (lambda b: os.urandom(len(b)), 0),  # garbage
        (lambda b: b + b"extra", STORED),  # appended bytes
    ],
)
def test_tampering_gives_good_0(written, state_dir, change, reported):
    tamper(state_dir, SLOT_CA_CERT, change)
    assert written.status(SLOT_CA_CERT) == (0, reported)
    assert written.load(SLOT_CA_CERT) is None
    # A damaged slot is still filled: the host must delete it before writing.
    with pytest.raises(SlotOccupied):
        written.write(SLOT_CA_CERT, b"new")
    written.delete(SLOT_CA_CERT)
    written.write(SLOT_CA_CERT, b"new")
    assert written.status(SLOT_CA_CERT) == (1, xor16(b"new"))


def test_slot_files_cannot_be_swapped(state_dir):
    store = SecStore(state_dir)
    store.write(0, b"ca")
    store.write(1, b"client")
    slot_path(state_dir, 1).write_bytes(slot_path(state_dir, 0).read_bytes())
    assert store.status(1) == (0, xor16(b"ca"))
    assert store.load(1) is None
    assert store.status(0) == (1, xor16(b"ca"))


def test_slot_replaced_by_directory(written, state_dir):
    path = slot_path(state_dir, SLOT_CA_CERT)
    path.unlink()
    path.mkdir()
    assert written.status(SLOT_CA_CERT) == (0, 0)
    assert written.load(SLOT_CA_CERT) is None


# -- key damage -----------------------------------------------------------------


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.unlink(),
        lambda p: p.write_bytes(b""),
        lambda p: p.write_bytes(b"short"),
        lambda p: p.write_bytes(os.urandom(32)),  # right size, wrong key
        lambda p: p.write_bytes(os.urandom(33)),
    ],
)
def test_missing_or_corrupt_key(written, state_dir, damage):
    written.write(SLOT_CLIENT_KEY, ODD)
    damage(key_path(state_dir))
    for store in (written, SecStore(state_dir)):
        assert store.status(SLOT_CA_CERT) == (0, STORED)
        assert store.status(SLOT_CLIENT_KEY) == (0, 0x4434)
        assert store.load(SLOT_CA_CERT) is None
    # Recovery as on the module: delete, write again (a fresh key if needed).
    written.delete(SLOT_CA_CERT)
    written.write(SLOT_CA_CERT, b"fresh")
    assert written.status(SLOT_CA_CERT) == (1, xor16(b"fresh"))
    assert SecStore(state_dir).load(SLOT_CA_CERT) == b"fresh"
    assert len(key_path(state_dir).read_bytes()) == 32
    assert stat.S_IMODE(key_path(state_dir).stat().st_mode) == 0o600


# -- atomic writes --------------------------------------------------------------


def failing_os_call(*args, **kwargs):
    raise OSError(5, "Input/output error")


def test_crash_while_writing_slot_leaves_it_empty(state_dir, monkeypatch):
    store = SecStore(state_dir)
    store.write(SLOT_CA_CERT, b"kept")  # creates the key first
    monkeypatch.setattr(os, "replace", failing_os_call)
    with pytest.raises(SecStoreError):
        store.write(SLOT_CLIENT_CERT, b"lost")
    monkeypatch.undo()
    assert not store.is_filled(SLOT_CLIENT_CERT)
    assert store.status(SLOT_CA_CERT) == (1, xor16(b"kept"))
    names = sorted(p.name for p in (state_dir / "secstore").iterdir())
    assert names == ["device.key", "slot0.bin"]  # no temp file left behind


def test_crash_while_creating_key_leaves_nothing(state_dir, monkeypatch):
    store = SecStore(state_dir)
    monkeypatch.setattr(os, "link", failing_os_call)
    with pytest.raises(SecStoreError):
        store.write(SLOT_CA_CERT, b"x")
    monkeypatch.undo()
    assert list((state_dir / "secstore").iterdir()) == []
    store.write(SLOT_CA_CERT, b"x")
    assert store.status(SLOT_CA_CERT) == (1, xor16(b"x"))


def test_stale_temp_files_removed_on_start(state_dir):
    SecStore(state_dir).write(0, b"x")
    (state_dir / "secstore" / "..tmp-leftover").write_bytes(b"junk")
    SecStore(state_dir)
    assert sorted(p.name for p in (state_dir / "secstore").iterdir()) == [
        "device.key",
        "slot0.bin",
    ]
