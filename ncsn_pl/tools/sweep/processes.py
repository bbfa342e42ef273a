"""The trial processes of the offline runner: stopping them, and the runner's own stop signal."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["SweepStopped", "log_tail", "sigterm_deferred", "sigterm_raises", "stop_process"]


class SweepStopped(Exception):
    """Raised in the runner when SIGTERM arrives (SIGINT raises ``KeyboardInterrupt``)."""


def log_tail(path: Path, lines: int = 3) -> str:
    """The last ``lines`` non-empty lines of a trial's log, joined by `` | `` (at most 600 characters)."""
    try:
        text = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return " | ".join(text[-lines:])[-600:]


def stop_process(process: subprocess.Popen) -> None:
    """SIGTERM the trial's process group (Lightning writes its checkpoint); SIGKILL it after 30 s, or at once
    on a second Ctrl-C / SIGTERM, so no trial outlives the runner."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except (subprocess.TimeoutExpired, KeyboardInterrupt, SweepStopped):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """In the main thread, turn SIGTERM (a preempted job) into :class:`SweepStopped` while the sweep runs."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise SweepStopped(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def sigterm_deferred() -> Iterator[None]:
    """Hold back SIGTERM (a preemption) while the block runs, e.g. while a finished trial is recorded; it is
    delivered when the block ends. Main thread only (elsewhere the block runs as is)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
