"""One folder per run: ``<save_dir>/version_N/`` claimed atomically, held while the run lives, continued on resume.

Lightning's ``CSVLogger`` picks the next free ``version_N`` by listing the folder, so two fits started together with
the same ``trainer.default_root_dir`` (a job array) pick the same one and write into each other's files; and a resumed
run starts a new version (its ``metrics.csv`` is split) or, given its old version, deletes its ``metrics.csv``.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only, rank_zero_warn
from lightning.pytorch.core.saving import save_hparams_to_yaml
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ncsn_pl.runs.records import RUN_LOCK_FILE, write_run_status
from ncsn_pl.runs.step_records import SAMPLE_QUALITY_RECORDS, trim_step_records
from ncsn_pl.system.files import atomic_write, atomic_write_text, remove_stale_temporaries
from ncsn_pl.system.locks import LockHeldError, ProcessLock

__all__ = ["RunFolderInUseError", "RunLogger", "claim_version", "continued_run"]

LOCK_FILE = RUN_LOCK_FILE
BRANCH_RECORD = "branched_from.json"
# where a run writes files (its checkpoints and sample grids besides its own files), cleaned of a killed writer's
# temporary files when the run is continued
RUN_SUBFOLDERS = ("checkpoints", "samples")

log = logging.getLogger(__name__)


class RunFolderInUseError(RuntimeError):
    """Another live process holds the run folder."""


def claim_version(root: str | os.PathLike[str]) -> int:
    """Create the next free ``root/version_N`` folder and return N; ``os.mkdir`` makes the claim atomic, so two
    processes never get the same folder."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    version = _next_version(root)
    while True:
        try:
            (root / f"version_{version}").mkdir()
            return version
        except FileExistsError:
            version += 1


def _next_version(root: str | os.PathLike[str]) -> int:
    """One more than the highest N of ``root/version_N`` (0 when there is none)."""
    taken = [int(p.name[8:]) for p in Path(root).glob("version_*") if p.name[8:].isdigit()]
    return max(taken, default=-1) + 1


def _hold(folder: Path) -> ProcessLock:
    """Lock ``folder`` for this process (released when the process ends); fail if a live process holds it."""
    try:
        return ProcessLock(folder / LOCK_FILE)
    except LockHeldError as err:
        raise RunFolderInUseError(
            f"The run folder {folder} is in use by a live run ({err.holder}); wait for it to end, or start a new run "
            "(leave out --ckpt_path, or give another trainer.default_root_dir)."
        ) from None


def run_end(status: str) -> tuple[str, str]:
    """How the run ended, for ``run_status.json``: Lightning's ``finalize`` status (``success`` at the end of a fit,
    ``failed`` while an exception is handled) and that exception: ``("finished", "")``, ``("interrupted", why)``
    for a SIGTERM (a preemption) or Ctrl-C, else ``("failed", the error)``."""
    if status == "success":
        return "finished", ""
    error = sys.exc_info()[1]  # finalize("failed") is called inside Lightning's ``except`` block
    if isinstance(error, SIGTERMException):
        return "interrupted", "SIGTERM (preempted): resume it with --ckpt_path <run>/checkpoints/last.ckpt"
    if isinstance(error, KeyboardInterrupt):
        return "interrupted", "KeyboardInterrupt"
    if error is None:  # Lightning's SLURM requeue handler finalizes with "finished" in the middle of the fit
        return "interrupted", f"the logger was finalized with status {status!r} during the run"
    message = str(error).strip().splitlines()
    return "failed", f"{type(error).__name__}: {message[0]}" if message else type(error).__name__


def _remove_leftovers(folder: Path) -> None:
    """Remove the temporary files a killed run left in its folder (a checkpoint half written at a SIGKILL)."""
    removed = [p for sub in ("", *RUN_SUBFOLDERS) for p in remove_stale_temporaries(folder / sub)]
    if removed:
        log.info("Removed %d temporary file(s) that the stopped run left unfinished in %s: %s", len(removed), folder,
                 ", ".join(str(p.relative_to(folder)) for p in removed))


def continued_run(ckpt_path: str | os.PathLike[str], root: str | os.PathLike[str]) -> Path | None:
    """The run folder ``root/version_N`` that a fit from ``ckpt_path`` continues (:meth:`RunLogger.continue_run`):
    the one whose ``checkpoints/`` holds it, when it is that run's latest checkpoint; else None."""
    found = _checkpoint_run(ckpt_path, root)
    return found[0] if found is not None and found[1] >= found[2] else None


def _checkpoint_run(ckpt_path: str | os.PathLike[str], root: str | os.PathLike[str]) -> tuple[Path, int, int] | None:
    """``(run folder, the checkpoint's step, the step of the run's last.ckpt)`` when ``ckpt_path`` lies in
    ``root/version_N/checkpoints/``, else None."""
    checkpoints = Path(ckpt_path).resolve().parent
    run = checkpoints.parent
    if checkpoints.name != "checkpoints" or run.parent != Path(root).resolve():
        return None
    if not (run.name.startswith("version_") and run.name[8:].isdigit()):
        return None
    step = _global_step(ckpt_path)
    last = checkpoints / "last.ckpt"
    return run, step, _global_step(last) if last.is_file() else step


def _global_step(path: str | os.PathLike[str]) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("global_step", 0))


class MetricsWriter:
    """A run's ``metrics.csv`` (a row per logged step, a sorted column per metric, as Lightning's ``CSVLogger`` writes
    it) and ``hparams.yaml``, written for :class:`RunLogger` through Lightning's public ``Logger`` calls.

    A resumed run (``resume_step``) keeps the file's rows up to that step (the ones after it are logged again, and so
    the records of ``sample_quality.jsonl``) and appends; when new metrics widen the header, the file is rewritten
    through a staged copy (whole or not at all; Lightning's writer rewrites in place). A folder neither resumed nor
    just claimed (``claimed``: it holds only the run's own lock and config) may hold an older run's logs: as Lightning
    does, that run's ``metrics.csv`` is replaced, with a warning.
    """

    NAME_METRICS_FILE = "metrics.csv"
    NAME_HPARAMS_FILE = "hparams.yaml"

    def __init__(self, log_dir: str, resume_step: int | None, claimed: bool = False) -> None:
        self.log_dir = log_dir
        self.metrics_file_path = os.path.join(log_dir, self.NAME_METRICS_FILE)
        self.metrics: list[dict[str, Any]] = []  # rows not yet written
        self.metrics_keys: list[str] = []
        self.hparams: dict[str, Any] = {}
        folder = Path(log_dir)
        if resume_step is None and not claimed and folder.is_dir() and any(folder.iterdir()):
            rank_zero_warn(f"Experiment logs directory {log_dir} exists and is not empty. Previous log files in this "
                           "directory will be deleted when the new ones are saved!")  # fmt: skip
            Path(self.metrics_file_path).unlink(missing_ok=True)
        folder.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and os.path.isfile(self.metrics_file_path):
            keys, rows = self._read()
            kept = [row for row in rows if not row.get("step") or int(float(row["step"])) <= resume_step]
            self.metrics_keys = sorted(keys)
            self._write(kept)
        if resume_step is not None:
            trim_step_records(folder / SAMPLE_QUALITY_RECORDS, resume_step)

    def log_metrics(self, metrics_dict: dict[str, Any], step: int | None = None) -> None:
        """Keep a row of ``metrics_dict`` at ``step`` (the number of rows so far when not given)."""
        row = {key: value.item() if isinstance(value, torch.Tensor) else value for key, value in metrics_dict.items()}
        row["step"] = len(self.metrics) if step is None else step
        self.metrics.append(row)

    def log_hparams(self, params: dict[str, Any]) -> None:
        self.hparams.update(params)
        save_hparams_to_yaml(os.path.join(self.log_dir, self.NAME_HPARAMS_FILE), self.hparams)

    def save(self) -> None:
        """Write the rows kept since the last save."""
        if not self.metrics:
            return
        keys = set().union(*self.metrics)
        exists = os.path.isfile(self.metrics_file_path)
        widened = not keys <= set(self.metrics_keys)
        self.metrics_keys = sorted(keys | set(self.metrics_keys))
        if widened and exists:
            self._write(self._read()[1] + self.metrics)
        else:
            with open(self.metrics_file_path, "a" if exists else "w", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=self.metrics_keys)
                if not exists:
                    writer.writeheader()
                writer.writerows(self.metrics)
        self.metrics = []

    def _read(self) -> tuple[list[str], list[dict[str, str]]]:
        with open(self.metrics_file_path, newline="") as file:
            reader = csv.DictReader(file)
            return list(reader.fieldnames or []), list(reader)

    def _write(self, rows: list[dict[str, Any]]) -> None:
        """Replace ``metrics.csv`` by ``rows`` under the current header, atomically (csv's line ending, as appends)."""
        with atomic_write(self.metrics_file_path, "w") as file:
            writer = csv.DictWriter(file, fieldnames=self.metrics_keys, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)


class RunLogger(CSVLogger):
    """Lightning's ``CSVLogger`` (``metrics.csv`` and ``hparams.yaml`` in ``<save_dir>/<name>/version_N/``) where each
    run owns its folder.

    A new run claims the next free ``version_N`` atomically and holds a lock on it while it lives, so runs started
    together never share a folder; its ``run_status.json`` says ``running`` from then on, and how the run ended
    when it ends (:func:`run_end`), which ``compare`` reads. A resumed run is given its version (the CLI does so when
    ``--ckpt_path`` lies in ``version_N/checkpoints/``): it takes the lock (a folder a live run holds is refused) and
    continues the run's ``metrics.csv`` from the checkpoint's step.

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
        self._run_version = version  # this class's own, as is its writer: Lightning's attributes stay unused
        self._writer: MetricsWriter | None = None
        self._resume_step = resume_step
        self._lock: ProcessLock | None = None
        self.branched_from: dict[str, Any] | None = None  # set by continue_run for an earlier checkpoint
        self._claimed = False  # whether this run made its folder (claim_version), so nothing in it is older

    def continue_run(self, ckpt_path: str | os.PathLike[str]) -> bool:
        """Continue the run whose ``version_N/checkpoints/`` holds ``ckpt_path``, if it is one of this logger's runs
        and the checkpoint is its latest: log into that folder, its ``metrics.csv`` kept up to the checkpoint's step.
        Returns whether it does.

        A checkpoint earlier than the run's ``last.ckpt`` (resuming from a snapshot, e.g. with another ``lr``)
        branches instead: the new run gets a folder of its own, whose ``branched_from.json`` names the checkpoint,
        its step and the run, so the run's later history (metrics, ``last.ckpt``, config) is kept.

        Raises:
            RunFolderInUseError: a live run holds that folder (checked at once, before any W&B run is started).
        """
        found = _checkpoint_run(ckpt_path, self.root_dir)
        if found is None:
            return False
        run, step, latest = found
        if step < latest:
            self.branched_from = {"checkpoint": str(Path(ckpt_path).resolve()), "step": step, "run": str(run),
                                  "run_step": latest}  # fmt: skip
            return False
        if rank_zero_only.rank == 0:  # refused now, before any logger starts a run (W&B), if a live run holds it
            _hold(run).release()
        self._run_version, self._claimed = int(run.name[8:]), False
        self._resume_step = step
        return True

    @property
    def version(self) -> int | str:
        """The run's version: given, or claimed on first use (on global rank 0, which writes; the other ranks read
        the folder from the Trainer, which broadcasts it)."""
        if self._run_version is None:
            self._claimed = rank_zero_only.rank == 0
            self._run_version = claim_version(self.root_dir) if self._claimed else _next_version(self.root_dir)
        return self._run_version

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Write what is left, record how the run ended and release the run folder."""
        if self._writer is not None:
            self.save()
        if self._lock is not None:
            try:
                write_run_status(self.log_dir, *run_end(status))
            except OSError:
                pass  # a full disk: the error that ended the run is the one to report; compare says "killed"
            self._lock.release()
            self._lock = None

    @property
    @rank_zero_experiment
    def experiment(self) -> MetricsWriter:
        """The metrics writer; the first call takes the run folder's lock."""
        if self._writer is None:
            folder = Path(self.log_dir)
            folder.mkdir(parents=True, exist_ok=True)
            self._lock = _hold(folder)
            write_run_status(folder, "running")
            if self._resume_step is not None:  # the lock is ours: no writer of the run's files is alive
                _remove_leftovers(folder)
            self._writer = MetricsWriter(self.log_dir, self._resume_step, self._claimed)
            if self.branched_from is not None:
                atomic_write_text(json.dumps(self.branched_from, indent=2) + "\n", folder / BRANCH_RECORD)
        return self._writer
