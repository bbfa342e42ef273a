"""Exclusive locks on shared file systems: ``flock`` where the file system has it, an atomic ``mkdir`` where not.

Lustre mounted without ``-o flock`` (and some NFS set-ups) answer ``flock`` with ``ENOSYS`` / ``EOPNOTSUPP`` /
``ENOLCK``. There the lock falls back to creating a folder ``<lock file>.d`` (``mkdir`` is atomic on every POSIX file
system, NFS and Lustre included) with an ``owner`` file naming the host and pid. A folder left by a process that is
gone from this host is taken over; one held past ``stale_after`` seconds by a short critical section is broken.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = ["LockHeldError", "NO_FLOCK_ERRNOS", "ProcessLock", "exclusive", "lock_holder"]

# what flock raises on a file system that does not implement it
NO_FLOCK_ERRNOS = frozenset({errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK})


class LockHeldError(RuntimeError):
    """Another live process holds the lock; ``holder`` says which (``pid N`` or ``pid N on HOST``)."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


def _flock(handle: IO[str], blocking: bool) -> bool | None:
    """``True``: locked; ``False``: another process holds it; ``None``: the file system has no ``flock``."""
    import fcntl

    try:
        fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        return True
    except BlockingIOError:
        return False
    except OSError as err:
        if err.errno in NO_FLOCK_ERRNOS:
            return None
        raise


def _owner() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()}"


def _holder(folder: Path) -> str:
    try:
        return (folder / "owner").read_text().strip() or "another process"
    except OSError:
        return "another process"


def _holder_gone(folder: Path) -> bool:
    """Whether the folder's owner ran on this host and its process no longer exists."""
    words = _holder(folder).split()
    if len(words) != 4 or words[0] != "pid" or words[3] != socket.gethostname() or not words[1].isdigit():
        return False
    try:
        os.kill(int(words[1]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _break(folder: Path) -> None:
    """Remove a dead holder's lock folder; renamed first, so two processes breaking it at once cannot remove a new
    holder's folder."""
    doomed = folder.with_name(f"{folder.name}.broken-{os.getpid()}-{time.monotonic_ns()}")
    with contextlib.suppress(OSError):
        folder.rename(doomed)
        shutil.rmtree(doomed, ignore_errors=True)


def _claim_folder(folder: Path) -> bool:
    try:
        folder.mkdir()
    except FileExistsError:
        return False
    (folder / "owner").write_text(_owner() + "\n")
    return True


class ProcessLock:
    """A lock held for the life of a process (a run folder): ``flock`` on ``path``, or the folder ``<path>.d``.

    Raises:
        LockHeldError: another live process holds it (from the constructor).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.folder: Path | None = None
        self.handle: IO[str] | None = open(self.path, "a+")  # noqa: SIM115 - held open for the life of the lock
        locked = _flock(self.handle, blocking=False)
        if locked is None:  # no flock here: the folder claim
            self.handle.close()
            self.handle = None
            folder = self.path.with_name(self.path.name + ".d")
            if not _claim_folder(folder):
                if not _holder_gone(folder):
                    raise LockHeldError(_holder(folder))
                _break(folder)
                if not _claim_folder(folder):
                    raise LockHeldError(_holder(folder))
            self.folder = folder
            return
        if not locked:
            self.handle.seek(0)
            holder = self.handle.read().strip() or "another process"
            self.handle.close()
            raise LockHeldError(holder)
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(f"pid {os.getpid()}\n")
        self.handle.flush()

    def release(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None
        if self.folder is not None:
            _break(self.folder)
            self.folder = None


def lock_holder(path: str | os.PathLike[str]) -> str | None:
    """Who holds the :class:`ProcessLock` at ``path`` (``pid N`` or ``pid N on HOST``), or None when no live process
    holds it; for readers such as ``compare``, which must not take it.

    With ``flock`` the probe is a shared lock taken without waiting and dropped at once: a run that tries to take the
    lock in that same instant is refused as if the folder were in use. Without ``flock``, the lock folder
    ``<path>.d`` is held unless its owner ran on this host and is gone.
    """
    path = Path(path)
    folder = path.with_name(path.name + ".d")
    if folder.is_dir():
        return None if _holder_gone(folder) else _holder(folder)
    try:
        handle = open(path)  # noqa: SIM115 - closed below; read-only, so the probe creates nothing
    except FileNotFoundError:
        return None
    with handle:
        import fcntl

        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return handle.read().strip() or "another process"
        except OSError as err:
            if err.errno in NO_FLOCK_ERRNOS:
                return None
            raise
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


@contextlib.contextmanager
def exclusive(path: str | os.PathLike[str], *, stale_after: float = 60.0, poll: float = 0.02) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` for a short critical section, waiting for other holders.

    Without ``flock``, a lock folder older than ``stale_after`` seconds (by its own modification time, against this
    node's clock) or left by a dead process of this host is broken: the section it guarded lasts milliseconds.
    """
    path = Path(path)
    with open(path, "a+") as handle:
        if _flock(handle, blocking=True):
            try:
                yield
            finally:
                import fcntl

                fcntl.flock(handle, fcntl.LOCK_UN)
            return
    folder = path.with_name(path.name + ".d")
    while not _claim_folder(folder):
        try:
            age = time.time() - folder.stat().st_mtime
        except FileNotFoundError:
            continue
        if age > stale_after or _holder_gone(folder):
            _break(folder)
        else:
            time.sleep(poll)
    try:
        yield
    finally:
        _break(folder)
