"""One folder per run: ``<save_dir>/version_N/`` claimed atomically, held while the run lives, continued on resume.

Lightning's ``CSVLogger`` picks the next free ``version_N`` by listing the folder, so two fits started together with
the same ``trainer.default_root_dir`` (a job array) pick the same one and write into each other's files; and a resumed
run starts a new version (its ``metrics.csv`` is split) or, given its old version, deletes its ``metrics.csv``.
"""

from __future__ import annotations

import csv
import fcntl
import os
from pathlib import Path
from typing import IO, Any

import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from ncsn_pl.core.files import atomic_write, atomic_write_text
from ncsn_pl.core.step_records import SAMPLE_QUALITY_RECORDS, trim_step_records

__all__ = ["RunFolderInUseError", "RunLogger", "claim_version"]

LOCK_FILE = ".run.lock"


class RunFolderInUseError(RuntimeError):
    """Another live process holds the run folder."""


def claim_version(root: str | os.PathLike[str]) -> int:
    """Create the next free ``root/version_N`` folder and return N; ``os.mkdir`` makes the claim atomic, so two
    processes never get the same folder."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    taken = [int(p.name[8:]) for p in root.glob("version_*") if p.name[8:].isdigit()]
    version = max(taken, default=-1) + 1
    while True:
        try:
            (root / f"version_{version}").mkdir()
            return version
        except FileExistsError:
            version += 1


def _hold(folder: Path) -> IO[str]:
    """Lock ``folder`` for this process (released when the process ends); fail if a live process holds it."""
    handle = open(folder / LOCK_FILE, "a+")  # noqa: SIM115 - held open for the life of the run
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise RunFolderInUseError(
            f"The run folder {folder} is in use by a live run ({holder}); wait for it to end, or start a new run "
            "(leave out --ckpt_path, or give another trainer.default_root_dir)."
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    return handle


class _ContinuingWriter(ExperimentWriter):
    """Lightning's metrics writer that keeps an existing ``metrics.csv`` (rows after ``resume_step`` dropped: the
    resumed run logs them again, and so the records of ``sample_quality.jsonl``) and appends to it; when new metrics
    widen its header, the file is rewritten through a staged copy (whole or not at all)."""

    def __init__(self, log_dir: str, resume_step: int | None) -> None:
        self._resume_step = resume_step
        super().__init__(log_dir)
        if resume_step is not None and os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as file:
                reader = csv.DictReader(file)
                keys, rows = list(reader.fieldnames or []), list(reader)
            kept = [row for row in rows if not row.get("step") or int(float(row["step"])) <= resume_step]
            self.metrics_keys = sorted(keys)
            lines = [",".join(self.metrics_keys)] + [
                ",".join(_csv_cell(row.get(key, "")) for key in self.metrics_keys) for row in kept
            ]
            atomic_write_text("\n".join(lines) + "\n", self.metrics_file_path)
        if resume_step is not None:
            trim_step_records(Path(log_dir) / SAMPLE_QUALITY_RECORDS, resume_step)

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        """Lightning's rewrite (Lightning writes in place: a run killed meanwhile would leave a truncated file)."""
        with open(self.metrics_file_path, newline="") as file:
            rows = list(csv.DictReader(file))
        with atomic_write(self.metrics_file_path, "w") as file:
            writer = csv.DictWriter(file, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)

    def _check_log_dir_exists(self) -> None:
        if self._resume_step is None:
            super()._check_log_dir_exists()


def _csv_cell(value: Any) -> str:
    text = str(value)
    return f'"{text}"' if any(c in text for c in ',"\n') else text


class RunLogger(CSVLogger):
    """Lightning's ``CSVLogger`` (``metrics.csv`` and ``hparams.yaml`` in ``<save_dir>/<name>/version_N/``) where each
    run owns its folder.

    A new run claims the next free ``version_N`` atomically and holds a lock on it while it lives, so runs started
    together never share a folder. A resumed run is given its version (the CLI does so when ``--ckpt_path`` lies in
    ``version_N/checkpoints/``): it takes the lock (a folder a live run holds is refused) and continues the run's
    ``metrics.csv`` from the checkpoint's step.

    Args:
        save_dir: where the run folders go (``trainer.default_root_dir`` in the configs).
        name: a subfolder of ``save_dir`` for the versions (``""``: none).
        version: continue this run folder (an int N for ``version_N``, or a folder name); ``None`` claims a new one.
        prefix: prepended to every metric name.
        flush_logs_every_n_steps: how often ``metrics.csv`` is written.
        resume_step: the global step the resumed run restarts from; rows logged after it are dropped.
    """

    def __init__(
        self,
        save_dir: str,
        name: str | None = "",
        version: int | str | None = None,
        prefix: str = "",
        flush_logs_every_n_steps: int = 100,
        resume_step: int | None = None,
    ) -> None:
        super().__init__(save_dir, name, version, prefix, flush_logs_every_n_steps)
        self._resume_step = resume_step
        self._lock: IO[str] | None = None

    def continue_run(self, ckpt_path: str | os.PathLike[str]) -> bool:
        """Continue the run whose ``version_N/checkpoints/`` holds ``ckpt_path``, if it is one of this logger's runs:
        log into that folder, its ``metrics.csv`` kept up to the checkpoint's step. Returns whether it is."""
        checkpoints = Path(ckpt_path).resolve().parent
        run = checkpoints.parent
        if checkpoints.name != "checkpoints" or run.parent != Path(self.root_dir).resolve():
            return False
        if not (run.name.startswith("version_") and run.name[8:].isdigit()):
            return False
        self._version = int(run.name[8:])
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
        self._resume_step = int(state.get("global_step", 0))
        return True

    @property
    def version(self) -> int | str:
        """The run's version: given, or claimed on first use (on global rank 0, which writes; the other ranks read
        the folder from the Trainer, which broadcasts it)."""
        if self._version is None:
            self._version = claim_version(self.root_dir) if rank_zero_only.rank == 0 else self._get_next_version()
        return self._version

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Write what is left and release the run folder (the run has ended, successfully or not)."""
        super().finalize(status)
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        """The metrics writer; the first call takes the run folder's lock."""
        if self._experiment is None:
            folder = Path(self.log_dir)
            folder.mkdir(parents=True, exist_ok=True)
            self._lock = _hold(folder)
            self._experiment = _ContinuingWriter(self.log_dir, self._resume_step)
        return self._experiment
