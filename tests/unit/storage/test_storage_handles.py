"""emulator.storage.handles against a model: a bytearray and a position per handle.
Any sequence of reads, writes, seeks and truncates leaves the drive holding what the
model holds, and each refusal is the one the model predicts."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.storage.handles import OpenFiles
from emulator.storage.vfs import FileError, FileStore

OPS = st.lists(st.one_of(
    st.tuples(st.just("write"), st.binary(max_size=40)),
    st.tuples(st.just("read"), st.one_of(st.none(), st.integers(1, 50))),
    st.tuples(st.just("seek"), st.integers(0, 60), st.integers(0, 2)),
    st.tuples(st.just("truncate")),
), max_size=40)


@settings(max_examples=300, deadline=None)
@given(start=st.binary(max_size=30), mode=st.integers(0, 2), ops=OPS)
def test_handle_operations_match_a_model(start, mode, ops):
    store = FileStore(None, 10_000, 10_000)
    store.write("RAM:f", start)
    files = OpenFiles(store, 1027, 4)
    h = files.open("RAM:f", mode)
    data = bytearray(b"" if mode == 1 else start)
    pos = 0
    for op in ops:
        try:
            if op[0] == "write":
                if mode == 2:
                    expect = 414
                else:
                    expect = None
                    if op[1]:
                        data[pos:pos + len(op[1])] = op[1]
                    written = (len(op[1]), len(data))
                    pos += len(op[1])
                got = files.write(h, op[1])
                assert expect is None and got == written
            elif op[0] == "read":
                end = len(data) if op[1] is None else min(len(data), pos + op[1])
                expect = 402 if end <= pos else None
                got = files.read(h, op[1])
                assert expect is None and got == bytes(data[pos:end])
                pos = end
            elif op[0] == "seek":
                target = (op[1], pos + op[1], len(data) - op[1])[op[2]]
                expect = None if 0 <= target <= len(data) else 401
                files.seek(h, op[1], op[2])
                assert expect is None
                pos = target
            else:
                expect = 414 if mode == 2 else None
                files.truncate(h)
                assert expect is None
                del data[pos:]
        except FileError as exc:
            assert exc.cme == expect, (op, exc)
        assert store.read("RAM:f") == bytes(data)
        assert files.position(h) == pos


def test_handles_numbering_limits_and_guards():
    store = FileStore(None, 100, 100)
    files = OpenFiles(store, 5, 2)
    a = files.open("x", 0)
    assert (a, files.open("RAM:y", 1)) == (5, 6)
    for call, code in ((lambda: files.open("z", 0), 413), (lambda: files.open("UFS:x", 2), 426),
                       (lambda: store.delete("x"), 426), (lambda: store.delete_matching("*"), 426),
                       (lambda: files.get(7), 416), (lambda: files.check_write(a, 101), 403)):
        try:
            call()
        except FileError as exc:
            assert exc.cme == code
        else:
            raise AssertionError(f"no FileError {code}")
    assert store.exists("x")                              # the pattern deleted nothing
    files.close(a)
    store.delete("x")
    assert files.open("RAM:w", 0) == 5                     # the lowest free handle again
    files.close_all()
    assert files.listing() == []


@pytest.mark.parametrize("on_disk", [False, True], ids=["memory", "directory"])
def test_reads_take_only_their_range_from_the_drive(tmp_path, on_disk):
    """1 MiB read in 1 KiB AT+QFREADs: the file comes back whole and in order, and the
    drive hands out 1 MiB in all -- not the whole file per read (a GiB of file I/O)."""
    store = FileStore(tmp_path if on_disk else None, 4 << 20, 4 << 20)
    body = bytes(range(256)) * 4096
    store.write("UFS:big", body)
    drive = store._drives["UFS"]
    served = []
    real_read = drive.read

    def counting_read(*args):
        data = real_read(*args)
        served.append(len(data))
        return data
    drive.read = counting_read
    files = OpenFiles(store, 1027, 4)
    h = files.open("UFS:big", 2)
    got = bytearray()
    while True:
        try:
            got += files.read(h, 1024)
        except FileError as exc:
            assert exc.cme == 402                          # the end of the file
            break
    assert bytes(got) == body
    assert sum(served) == len(body) and len(served) == 1024
    files.seek(h, 10, 2)                                   # 10 back from the end
    assert files.read(h, None) == body[-10:]
    assert sum(served) == len(body) + 10
