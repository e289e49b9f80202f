"""Tests for emulator.storage.vfs: files, capacity, patterns, persistence."""

import os
from pathlib import Path

import pytest

from emulator.storage.atomic_file import TEMP_PREFIX
from emulator.storage.vfs import FileError, FileStore

UFS_CAP = 10_000
RAM_CAP = 2_000


@pytest.fixture
def store():
    return FileStore(None, ufs_capacity=UFS_CAP, ram_capacity=RAM_CAP)


@pytest.fixture
def state_dir(tmp_path):
    return tmp_path / "state"


@pytest.fixture
def disk_store(state_dir):
    return FileStore(state_dir, ufs_capacity=UFS_CAP, ram_capacity=RAM_CAP)


def failing_os_call(*args, **kwargs):
    """Stands in for os.replace/os.fsync to simulate a crash or I/O error."""
    raise OSError(5, "Input/output error")


def all_files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


# -- single files ---------------------------------------------------------------


def test_write_read_roundtrip_and_names_are_case_sensitive(store):
    store.write("cacert.pem", b"upper")
    store.write("CACERT.pem", b"other")
    assert store.read("UFS:cacert.pem") == b"upper"
    assert store.read("ufs:CACERT.pem") == b"other"
    assert store.size("cacert.pem") == 5


def test_bare_name_is_ufs_not_ram(store):
    store.write("a.pem", b"1")
    assert store.exists("UFS:a.pem")
    assert not store.exists("RAM:a.pem")


def test_write_replaces_by_default(store):
    store.write("a.pem", b"old contents")
    store.write("a.pem", b"new")
    assert store.read("a.pem") == b"new"
    assert store.list() == [("a.pem", 3)]


def test_write_without_overwrite_refuses_existing_file(store):
    store.write("a.pem", b"old")
    with pytest.raises(FileError) as info:
        store.write("a.pem", b"new", overwrite=False)
    assert info.value.code == 407
    assert store.read("a.pem") == b"old"


def test_empty_file_is_allowed(store):
    store.write("RAM:empty", b"")
    assert store.read("RAM:empty") == b"" and store.size("RAM:empty") == 0


@pytest.mark.parametrize("op", ["read", "size", "delete"])
def test_missing_file_is_405(store, op):
    with pytest.raises(FileError) as info:
        getattr(store, op)("RAM:nothing.pem")
    assert info.value.code == 405


def test_exists(store):
    assert not store.exists("x")
    store.write("x", b"1")
    assert store.exists("x") and store.exists("UFS:x")


def test_delete(store):
    store.write("RAM:x", b"1")
    store.delete("ram:x")
    assert not store.exists("RAM:x")


# -- capacity -------------------------------------------------------------------


def test_capacity_exact_fit_then_full(store):
    store.write("RAM:a", b"x" * (RAM_CAP - 10))
    store.write("RAM:b", b"x" * 10)
    assert store.space("RAM") == (0, RAM_CAP)
    with pytest.raises(FileError) as info:
        store.write("RAM:c", b"x")
    assert info.value.code == 403


def test_replacing_reuses_the_old_files_space(store):
    store.write("RAM:a", b"x" * RAM_CAP)
    store.write("RAM:a", b"y" * RAM_CAP)  # would not fit if old size counted
    with pytest.raises(FileError):
        store.write("RAM:a", b"y" * (RAM_CAP + 1))
    assert store.read("RAM:a") == b"y" * RAM_CAP


def test_drives_have_separate_capacity(store):
    store.write("RAM:a", b"x" * RAM_CAP)
    store.write("UFS:a", b"x" * (RAM_CAP + 1))
    assert store.space("UFS") == (UFS_CAP - RAM_CAP - 1, UFS_CAP)
    assert store.space("ram:") == (0, RAM_CAP)


def test_usage_reports_bytes_and_count(store):
    store.write("a", b"123")
    store.write("b", b"45")
    assert store.usage("UFS") == (5, 2)
    assert store.usage("RAM") == (0, 0)


def test_space_unknown_drive(store):
    with pytest.raises(FileError):
        store.space("SD")


def test_max_files(store):
    small = FileStore(None, UFS_CAP, RAM_CAP, max_files=2)
    small.write("a", b"")
    small.write("b", b"")
    small.write("a", b"again")  # replacing does not add a file
    with pytest.raises(FileError) as info:
        small.write("c", b"")
    assert info.value.code == 403


def test_check_writable_predicts_write(store):
    store.check_writable("RAM:a", RAM_CAP)
    with pytest.raises(FileError):
        store.check_writable("RAM:a", RAM_CAP + 1)
    store.write("RAM:a", b"1")
    with pytest.raises(FileError) as info:
        store.check_writable("RAM:a", 1, overwrite=False)
    assert info.value.code == 407


# -- list and delete patterns ---------------------------------------------------


@pytest.fixture
def populated(store):
    for name, data in [
        ("cacert.pem", b"ca"),
        ("client.pem", b"client"),
        ("client.key", b"k"),
        ("RAM:cacert.pem", b"ram-ca"),
        ("RAM:tmp.bin", b"t"),
    ]:
        store.write(name, data)
    return store


def test_list_default_is_ufs_only(populated):
    assert populated.list() == [("cacert.pem", 2), ("client.key", 1), ("client.pem", 6)]
    assert populated.list("*") == populated.list() == populated.list("UFS:*")


def test_list_ram_uses_ram_prefix(populated):
    assert populated.list("RAM:*") == [("RAM:cacert.pem", 6), ("RAM:tmp.bin", 1)]
    assert populated.list("ram:*") == populated.list("RAM:*")


def test_list_patterns(populated):
    assert populated.list("client.*") == [("client.key", 1), ("client.pem", 6)]
    assert populated.list("*.pem") == [("cacert.pem", 2), ("client.pem", 6)]
    assert populated.list("client.pe?") == [("client.pem", 6)]
    assert populated.list("cacert.pem") == [("cacert.pem", 2)]
    assert populated.list("RAM:cacert.pem") == [("RAM:cacert.pem", 6)]
    assert populated.list("nothing*") == []
    assert populated.list("CACERT.PEM") == []  # case-sensitive


def test_brackets_are_literal_not_a_character_class(store):
    store.write("a[1].pem", b"1")
    store.write("a1.pem", b"2")
    assert store.list("a[1].pem") == [("a[1].pem", 1)]


@pytest.mark.parametrize("pattern", ["../*", "/*", "SD:*", "a/*"])
def test_bad_patterns_refused(populated, pattern):
    with pytest.raises(FileError):
        populated.list(pattern)
    with pytest.raises(FileError):
        populated.delete_matching(pattern)


def test_delete_matching_star_is_all_ufs_only(populated):
    assert populated.delete_matching("*") == 3
    assert populated.list() == []
    assert len(populated.list("RAM:*")) == 2


def test_delete_matching_ram_star(populated):
    assert populated.delete_matching("RAM:*") == 2
    assert populated.list("RAM:*") == []
    assert len(populated.list()) == 3


def test_delete_matching_pattern_and_zero_matches(populated):
    assert populated.delete_matching("client.*") == 2
    assert populated.list() == [("cacert.pem", 2)]
    assert populated.delete_matching("nothing*") == 0


# -- RAM lifetime ---------------------------------------------------------------


def test_clear_ram_keeps_ufs(populated):
    populated.clear_ram()
    assert populated.list("RAM:*") == []
    assert populated.space("RAM") == (RAM_CAP, RAM_CAP)
    assert len(populated.list()) == 3


def test_ram_is_lost_on_restart_ufs_survives(state_dir):
    first = FileStore(state_dir, UFS_CAP, RAM_CAP)
    first.write("cacert.pem", b"persistent")
    first.write("RAM:cacert.pem", b"volatile")
    second = FileStore(state_dir, UFS_CAP, RAM_CAP)
    assert second.read("cacert.pem") == b"persistent"
    assert not second.exists("RAM:cacert.pem")
    assert second.list() == [("cacert.pem", 10)]
    assert second.space("UFS") == (UFS_CAP - 10, UFS_CAP)


# -- on disk --------------------------------------------------------------------


def test_ufs_files_live_in_state_dir_ufs(disk_store, state_dir):
    disk_store.write("UFS:cacert.pem", b"pem")
    assert (state_dir / "ufs" / "cacert.pem").read_bytes() == b"pem"
    disk_store.write("RAM:ram.pem", b"ram")
    assert all_files_under(state_dir) == {state_dir / "ufs" / "cacert.pem"}


def test_delete_persists(disk_store, state_dir):
    disk_store.write("a", b"1")
    disk_store.delete("a")
    assert not (state_dir / "ufs" / "a").exists()
    assert FileStore(state_dir, UFS_CAP, RAM_CAP).list() == []


def test_replace_persists(disk_store, state_dir):
    disk_store.write("a", b"first")
    disk_store.write("a", b"second")
    assert FileStore(state_dir, UFS_CAP, RAM_CAP).read("a") == b"second"


def test_crash_during_replace_leaves_old_content(disk_store, state_dir, monkeypatch):
    disk_store.write("cacert.pem", b"old content")

    monkeypatch.setattr(os, "replace", failing_os_call)
    with pytest.raises(FileError) as info:
        disk_store.write("cacert.pem", b"new content")
    assert info.value.code == 409
    monkeypatch.undo()
    assert disk_store.read("cacert.pem") == b"old content"
    assert disk_store.size("cacert.pem") == 11
    assert [p.name for p in (state_dir / "ufs").iterdir()] == ["cacert.pem"]
    assert FileStore(state_dir, UFS_CAP, RAM_CAP).read("cacert.pem") == b"old content"


def test_crash_on_first_write_leaves_no_file(disk_store, state_dir, monkeypatch):
    monkeypatch.setattr(os, "replace", failing_os_call)
    with pytest.raises(FileError):
        disk_store.write("new.pem", b"data")
    monkeypatch.undo()
    assert not disk_store.exists("new.pem")
    assert list((state_dir / "ufs").iterdir()) == []


def test_stale_temp_files_are_removed_and_never_listed(state_dir):
    ufs = state_dir / "ufs"
    ufs.mkdir(parents=True)
    (ufs / f"{TEMP_PREFIX}abc").write_bytes(b"half written")
    (ufs / "good.pem").write_bytes(b"good")
    store = FileStore(state_dir, UFS_CAP, RAM_CAP)
    assert store.list() == [("good.pem", 4)]
    assert sorted(p.name for p in ufs.iterdir()) == ["good.pem"]


def test_foreign_entries_in_ufs_dir_are_ignored(state_dir, tmp_path):
    ufs = state_dir / "ufs"
    ufs.mkdir(parents=True)
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"host secret")
    (ufs / "link.pem").symlink_to(secret)
    (ufs / "subdir").mkdir()
    store = FileStore(state_dir, UFS_CAP, RAM_CAP)
    assert store.list() == []
    with pytest.raises(FileError) as info:
        store.read("link.pem")
    assert info.value.code == 405


def test_symlink_planted_after_start_is_not_followed(disk_store, state_dir, tmp_path):
    disk_store.write("a.pem", b"mine")
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"host secret")
    target = state_dir / "ufs" / "a.pem"
    target.unlink()
    target.symlink_to(secret)
    with pytest.raises(FileError):
        disk_store.read("a.pem")


def test_failed_fsync_maps_to_409_and_leaves_no_temp(disk_store, state_dir, monkeypatch):
    # Directory permissions cannot simulate this when tests run as root.
    disk_store.write("a", b"old")
    monkeypatch.setattr(os, "fsync", failing_os_call)
    with pytest.raises(FileError) as info:
        disk_store.write("a", b"new")
    assert info.value.code == 409
    monkeypatch.undo()
    assert disk_store.read("a") == b"old"
    assert [p.name for p in (state_dir / "ufs").iterdir()] == ["a"]
