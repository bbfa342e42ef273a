"""The state of an offline sweep shared by its workers: ``sweep.json`` under a lock, and who is alive.

Several ``python -m ncsn_pl sweep`` processes (on one node, or on many sharing a file system) work on one sweep
folder. Every change to ``sweep.json`` is a read-modify-write under an exclusive ``flock`` of ``.sweep.lock``
held for milliseconds (:func:`locked_state`), so each worker sees the others' claims. A worker proves it is
alive by touching ``<trial>/heartbeat`` while its trial runs (:class:`Heartbeat`); a trial whose heartbeat is
older than the stale limit, measured with the file system's own clock, or whose worker process is gone from
this host, was abandoned (:func:`abandoned`).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import secrets
import socket
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ncsn_pl.system.files import atomic_write_text
from ncsn_pl.system.locks import exclusive
from ncsn_pl.tools.sweep.spec import plain

__all__ = [
    "FAILED",
    "FINISHED",
    "HEARTBEAT_FILE",
    "INTERRUPTED",
    "LOCK_FILE",
    "RUNNING",
    "STATE_FILE",
    "Heartbeat",
    "abandoned",
    "fs_now",
    "locked_state",
    "now",
    "worker_identity",
]

STATE_FILE = "sweep.json"
LOCK_FILE = ".sweep.lock"
HEARTBEAT_FILE = "heartbeat"
# states of a trial in sweep.json; "interrupted" trials run again (a preempted or stopped worker, a dead worker's
# first attempt); "running" ones belong to a live worker until they are found abandoned
FINISHED, FAILED, RUNNING, INTERRUPTED = "finished", "failed", "running", "interrupted"


def now() -> str:
    """The local time, ISO 8601 with the offset, to the second."""
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def worker_identity() -> dict[str, Any]:
    """This worker: ``{"id": "<host>:<pid>:<token>", "host", "pid"}`` (the token tells a reused pid apart)."""
    host, pid = socket.gethostname(), os.getpid()
    return {"id": f"{host}:{pid}:{secrets.token_hex(2)}", "host": host, "pid": pid}


@contextlib.contextmanager
def locked_state(folder: Path) -> Iterator[dict[str, Any]]:
    """Hold the sweep's lock and yield ``{"state": <sweep.json, or None when the folder has none yet>}``; what the
    block leaves under ``"state"`` is written back atomically (a reader never sees half a file).

    ``flock`` locks are shared across nodes on NFS (Linux emulates them with POSIX locks) and on Lustre mounted
    with ``-o flock``; where ``flock`` is missing (Lustre without ``-o flock``) an atomic ``mkdir`` takes its place
    (:func:`~ncsn_pl.system.locks.exclusive`). The lock is blocking: workers take turns for the few milliseconds of a
    read-modify-write.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / STATE_FILE
    with exclusive(folder / LOCK_FILE):
        state = json.loads(path.read_text()) if path.is_file() else None
        holder = {"state": state}
        yield holder
        if holder["state"] is not None:
            atomic_write_text(json.dumps(holder["state"], indent=1, default=plain) + "\n", path)


def fs_now(folder: Path) -> float:
    """The file system's current time: the modification time of a file touched just now in ``folder``.

    Heartbeats are compared with it, not with this node's clock, so that clock skew between nodes does not make a
    live worker look dead.
    """
    probe = folder / LOCK_FILE
    probe.touch()
    return probe.stat().st_mtime


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def abandoned(trial: Mapping[str, Any], trial_dir: Path, fs_time: float, stale_after: float) -> str | None:
    """Why the running ``trial`` has no live worker any more, or ``None`` while it has one.

    Its worker is gone when it ran on this host and its process no longer exists, or when the trial's
    ``heartbeat`` file (made when the trial is claimed) is missing or has not been touched for ``stale_after``
    seconds of file-system time.
    """
    worker = trial.get("worker") or {}
    if worker.get("host") == socket.gethostname() and worker.get("pid") and not _process_alive(int(worker["pid"])):
        return f"its worker (pid {worker['pid']} on {worker['host']}) is gone"
    try:
        last = (trial_dir / HEARTBEAT_FILE).stat().st_mtime  # made when the trial is claimed
    except FileNotFoundError:
        return f"its folder {trial_dir.name} has no {HEARTBEAT_FILE} file"
    if fs_time - last > stale_after:
        return f"its worker ({worker.get('id', '?')}) sent no heartbeat for {fs_time - last:.0f} s"
    return None


class Heartbeat:
    """Touch ``<trial dir>/heartbeat`` every ``interval`` seconds in a thread while a trial runs."""

    def __init__(self, trial_dir: Path, interval: float) -> None:
        self.path = trial_dir / HEARTBEAT_FILE
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="sweep-heartbeat", daemon=True)

    def _beat(self) -> None:
        while True:
            with contextlib.suppress(OSError):
                self.path.touch()
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
