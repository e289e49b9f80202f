"""Tests for emulator.storage.vfs names: parsing, traversal refusal, error table."""

from pathlib import Path

import pytest

from emulator.at.cme import CME_TEXT
from emulator.storage.vfs import FileError, FileStore

UFS_CAP = 10_000
RAM_CAP = 2_000


@pytest.fixture
def store():
    return FileStore(None, ufs_capacity=UFS_CAP, ram_capacity=RAM_CAP)


def all_files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


# -- error table ----------------------------------------------------------------


def test_error_table_has_quectel_numbers():
    # One table of +CME texts (emulator/at/cme.py) holds Quectel's FILE errors too.
    assert CME_TEXT[405] == "file not found"
    assert CME_TEXT[407] == "file already existed"
    assert CME_TEXT[403] == "drive full"
    assert 404 not in CME_TEXT and 408 not in CME_TEXT


def test_file_error_carries_code_and_text():
    err = FileError(405, "x.pem")
    assert (err.code, err.text, err.detail) == (405, "file not found", "x.pem")
    assert err.cme == 405                  # what the AT layer answers: +CME ERROR: 405
    assert "405" in str(err)


# -- names ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cacert.pem", ("UFS", "cacert.pem")),
        ("UFS:cacert.pem", ("UFS", "cacert.pem")),
        ("ufs:cacert.pem", ("UFS", "cacert.pem")),
        ("RAM:cacert.pem", ("RAM", "cacert.pem")),
        ("Ram:CaCert.PEM", ("RAM", "CaCert.PEM")),  # drive folded, name kept
        ("my cert.pem", ("UFS", "my cert.pem")),
        ("x" * 80, ("UFS", "x" * 80)),
    ],
)
def test_parse_name_accepts(store, name, expected):
    assert store.parse_name(name) == expected


TRAVERSALS = [
    "../x",
    "..",
    ".",
    "UFS:../../etc/passwd",
    "RAM:../x",
    "/etc/passwd",
    "UFS:/etc/passwd",
    "a/b",
    "a\\b",
    "..\\x",
    "x\x00y",
    "x\ny",
    "x\x7fy",
    "caf\u00e9.pem",
    "x" * 81,
    "SD:x",
    "EFS:x",
    ":x",
    "C:x",
    "UFS:",
    "",
    "UFS:a:b",
    "*",
    "ca?.pem",
    "RAM:*",
    " ",
    "x.pem ",
    " x.pem",
]


@pytest.mark.parametrize("name", TRAVERSALS)
def test_parse_name_refuses(store, name):
    with pytest.raises(FileError) as info:
        store.parse_name(name)
    assert info.value.code == 406


@pytest.mark.parametrize("name", TRAVERSALS)
def test_unsafe_names_write_nothing_anywhere(tmp_path, name):
    state = tmp_path / "deep" / "state"
    store = FileStore(state, ufs_capacity=UFS_CAP, ram_capacity=RAM_CAP)
    before = all_files_under(tmp_path)
    with pytest.raises(FileError):
        store.write(name, b"evil")
    assert all_files_under(tmp_path) == before
    assert store.list() == [] and store.list("RAM:*") == []


def test_parse_name_rejects_non_str(store):
    with pytest.raises(TypeError):
        store.parse_name(b"cacert.pem")


def test_max_name_len_is_configurable():
    store = FileStore(None, UFS_CAP, RAM_CAP, max_name_len=8)
    store.parse_name("RAM:12345678")
    with pytest.raises(FileError):
        store.parse_name("123456789")
