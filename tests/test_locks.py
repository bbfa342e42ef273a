"""Locks on file systems without flock (Lustre without -o flock): the run folder's and the sweep state's."""

import errno
import fcntl
import threading

import pytest

from ncsn_pl.runs.logger import RunFolderInUseError
from ncsn_pl.system import locks
from ncsn_pl.tools.sweep.state import locked_state
from ncsn_pl.training import RunLogger


@pytest.fixture
def no_flock(monkeypatch):
    """``flock`` fails as on Lustre mounted without ``-o flock``."""

    def enosys(*args):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", enosys)


def test_a_run_holds_its_folder_without_flock(tmp_path, no_flock):
    first = RunLogger(str(tmp_path))
    first.log_metrics({"a": 1.0}, step=0)
    assert (tmp_path / "version_0" / ".run.lock.d").is_dir()
    second = RunLogger(str(tmp_path), version=0)
    with pytest.raises(RunFolderInUseError, match=r"version_0 is in use by a live run \(pid \d+ on "):
        second.log_metrics({"a": 2.0}, step=1)
    first.finalize("success")
    assert not (tmp_path / "version_0" / ".run.lock.d").exists()
    second.log_metrics({"a": 2.0}, step=1)
    second.finalize("success")


def test_a_dead_holders_folder_claim_is_taken_over(tmp_path, no_flock):
    folder = tmp_path / ".run.lock.d"
    folder.mkdir()
    (folder / "owner").write_text(f"pid {2**22 + 7} on {locks.socket.gethostname()}\n")  # no such process
    held = locks.ProcessLock(tmp_path / ".run.lock")
    assert (folder / "owner").read_text().startswith(f"pid {locks.os.getpid()} ")
    with pytest.raises(locks.LockHeldError):
        locks.ProcessLock(tmp_path / ".run.lock")
    held.release()


def test_sweep_state_updates_are_serialised_without_flock(tmp_path, no_flock):
    with locked_state(tmp_path) as box:
        box["state"] = {"count": 0}

    def add():
        for _ in range(20):
            with locked_state(tmp_path) as box:
                box["state"]["count"] += 1

    threads = [threading.Thread(target=add) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with locked_state(tmp_path) as box:
        assert box["state"]["count"] == 80
    assert not (tmp_path / ".sweep.lock.d").exists()


def test_other_lock_errors_are_not_hidden(tmp_path, monkeypatch):
    def eio(*args):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(fcntl, "flock", eio)
    with pytest.raises(OSError, match="Input/output error"):
        locks.ProcessLock(tmp_path / ".run.lock")
