"""The --link lock (emulator/io/transport.py make_link / remove_link): a running emulator
holds `.<name>.lock` beside its link; a dead one's link is taken over even when its pty
number is someone else's now; the lock never follows a planted symlink, is a plain file,
and is the file on disk (not one a stopping emulator just unlinked)."""
from __future__ import annotations

import fcntl
import os

import pytest

import emulator.io.transport as transport
from emulator.io.transport import LinkError, link_lock_path, make_link, remove_link


@pytest.fixture
def ptys():
    """ptys() -> the slave path of a new pty, alive until the test ends ("another program")."""
    fds: list[int] = []

    def new() -> str:
        master, slave = os.openpty()
        fds.extend((master, slave))
        return os.ttyname(slave)
    yield new
    for fd in fds:
        os.close(fd)


def test_a_running_owner_is_refused_naming_its_pid_and_a_clean_stop_leaves_nothing(tmp_path, ptys):
    link = tmp_path / "modem"
    mine = ptys()
    lock = make_link(link, mine)
    assert os.readlink(link) == mine and link_lock_path(link).read_text() == f"{os.getpid()}\n"
    with pytest.raises(LinkError, match=rf"running modem-emulator \(pid {os.getpid()}\)"):
        make_link(link, ptys())
    assert os.readlink(link) == mine
    remove_link(link, mine, lock)
    assert not os.path.lexists(link) and not link_lock_path(link).exists()


def test_a_dead_owners_link_is_taken_over_though_its_pty_number_is_in_use(tmp_path, ptys):
    link = tmp_path / "modem"
    theirs = ptys()                               # the number, in another program's hands
    os.symlink(theirs, link)
    with pytest.raises(LinkError, match="points to"):
        make_link(link, ptys())                   # no lock: somebody else's link
    assert not link_lock_path(link).exists()      # (a lock made for nothing is not left)
    link_lock_path(link).write_text("4194304\n")  # a dead emulator's (free, its pid in it)
    mine = ptys()
    lock = make_link(link, mine)
    assert os.readlink(link) == mine
    remove_link(link, mine, lock)


def test_a_planted_symlink_is_never_followed(tmp_path, ptys):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious data")
    link = tmp_path / "modem"
    link_lock_path(link).symlink_to(victim)
    with pytest.raises(LinkError, match="is a symbolic link"):
        make_link(link, ptys())
    assert victim.read_text() == "precious data" and not os.path.lexists(link)


def test_a_lock_path_that_is_not_a_plain_file_is_refused(tmp_path, ptys):
    link = tmp_path / "modem"
    os.mkfifo(link_lock_path(link))
    with pytest.raises(LinkError, match="not a plain file"):
        make_link(link, ptys())
    assert not os.path.lexists(link)


def test_a_lock_unlinked_by_a_stopping_owner_between_open_and_flock_is_not_kept(tmp_path, ptys, monkeypatch):
    """Emulator A stops cleanly while B starts: B opened A's lock file, A unlinked it, then
    B's flock succeeded on the unlinked inode.  B must lock the file on disk, or a kill -9
    of B leaves a link nobody can tell is a dead emulator's.  (From a review.)"""
    link = tmp_path / "modem"
    a_pty = ptys()
    a_lock = make_link(link, a_pty)
    real_flock, stopped = fcntl.flock, []

    def flock(fd, op):
        if not stopped:                           # A's clean stop, between B's open and flock
            stopped.append(True)
            remove_link(link, a_pty, a_lock)
        return real_flock(fd, op)
    monkeypatch.setattr(transport.fcntl, "flock", flock)
    b_pty = ptys()
    b_lock = make_link(link, b_pty)
    monkeypatch.undo()
    assert os.readlink(link) == b_pty
    on_disk = os.stat(link_lock_path(link))
    assert (on_disk.st_dev, on_disk.st_ino) == (os.fstat(b_lock).st_dev, os.fstat(b_lock).st_ino)
    os.close(b_lock)                              # B killed -9 (its pty number stays in use)
    c_pty = ptys()
    c_lock = make_link(link, c_pty)               # the restart takes over
    assert os.readlink(link) == c_pty
    remove_link(link, c_pty, c_lock)
