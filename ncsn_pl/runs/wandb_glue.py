"""Where a run writes (its versioned folder) and what it tells Weights & Biases about itself."""

from __future__ import annotations

import netrc
import os
from collections.abc import Iterable, Mapping, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import lightning.pytorch as pl
from lightning.pytorch.loggers import WandbLogger

from ncsn_pl.compat import wandb_init_settings
from ncsn_pl.runs.records import (
    FID_COMMAND_GOALS,
    METRIC_SUMMARIES,
    SWEEP_PARAM_PATH,
    read_sweep_parameters,
    sweep_run_name,
)
from ncsn_pl.system.files import atomic_write_text

__all__ = [
    "METRIC_SUMMARIES",
    "SWEEP_PARAM_PATH",
    "declare_metric_summaries",
    "default_wandb_mode",
    "drop_unset_wandb_settings",
    "log_config",
    "log_fid_result",
    "log_to_sweep_run",
    "mark_wandb_preempting",
    "remember_wandb_run",
    "run_dir",
    "sweep_parameters",
    "sweep_run_name",
    "wandb_has_credentials",
    "wandb_run_checkpoint",
    "wandb_run_id_in",
    "wandb_run_of",
]


def run_dir(trainer: pl.Trainer) -> Path:
    """The folder of this run: the first logger's versioned ``log_dir``, else ``default_root_dir``."""
    for logger in trainer.loggers:
        log_dir = getattr(logger, "log_dir", None)
        if log_dir and not isinstance(logger, WandbLogger):
            return Path(log_dir)
    return Path(trainer.default_root_dir)


WANDB_ID_FILE = "wandb_run_id"


def remember_wandb_run(loggers: Iterable[object], folder: str | os.PathLike[str]) -> str | None:
    """Keep the id of the first W&B run among ``loggers`` in the run folder (``wandb_run_id``), so that a resumed
    run continues the same W&B run (:func:`wandb_run_id_in`). Call it on global rank 0 only; returns the id."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            run = logger.experiment
            if getattr(run, "disabled", False) or getattr(getattr(run, "settings", None), "mode", None) == "disabled":
                return None  # WANDB_MODE=disabled: no run to continue
            run_id = str(run.id) if getattr(run, "id", None) else None
            if run_id:
                atomic_write_text(run_id + "\n", Path(folder) / WANDB_ID_FILE)
            return run_id
    return None


def wandb_run_id_in(folder: str | os.PathLike[str]) -> str | None:
    """The id of the W&B run that the run folder keeps (:func:`remember_wandb_run`), or ``None``. A resumed run gives
    it to its ``WandbLogger`` as ``id`` (Lightning's logger resumes with ``resume="allow"``: online, the curves go on
    in the same run; offline, each part is written under the same id and ``wandb sync`` uploads them into one)."""
    path = Path(folder) / WANDB_ID_FILE
    if not path.is_file():
        return None
    return path.read_text().strip() or None


def wandb_run_checkpoint(root: str | os.PathLike[str], run_id: str) -> Path | None:
    """The ``last.ckpt`` of the run folder under ``root`` (``version_N/`` or ``<name>/version_N/``) that keeps the W&B
    run id ``run_id`` (:func:`remember_wandb_run`), the newest when several do; ``None`` when none does.

    A W&B run started again under its id (``wandb agent`` re-running a preempted sweep trial, or a requeued job with
    ``WANDB_RUN_ID`` set) finds the folder, and the checkpoint, of its earlier part this way."""
    root = Path(root)
    found = [
        path.parent / "checkpoints" / "last.ckpt"
        for pattern in (f"version_*/{WANDB_ID_FILE}", f"*/version_*/{WANDB_ID_FILE}")
        for path in root.glob(pattern)
        if (path.parent / "checkpoints" / "last.ckpt").is_file() and wandb_run_id_in(path.parent) == run_id
    ]
    return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None


def mark_wandb_preempting(loggers: Iterable[object]) -> int:
    """Mark every W&B run among ``loggers`` as preempting (``Run.mark_preempting``): one that then exits unfinished is
    shown as preempted, not crashed, and a sweep's controller gives a preempted trial to an agent again, which
    continues it (:func:`wandb_run_checkpoint`). Call it on global rank 0 only; returns how many runs were marked."""
    runs = 0
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.mark_preempting()  # a no-op in disabled mode
            runs += 1
    return runs


def log_config(loggers: Iterable[object], config: Mapping[str, Any]) -> int:
    """Put the whole resolved, nested run config into the config of every W&B run among ``loggers``.

    W&B shows nested dicts with dotted names, so ``{"model": {"sigma_max": 1.0}}`` appears as
    ``model.sigma_max``: the same key a sweep file sets. Call it on global rank 0 only (where
    ``WandbLogger.experiment`` is a real run). Works in offline and disabled mode.

    Args:
        loggers: the Trainer's loggers; those that are not ``WandbLogger`` are skipped.
        config: the resolved config (plain, JSON-serialisable values).

    Returns:
        How many W&B runs were updated.
    """
    runs = 0
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.config.update(dict(config), allow_val_change=True)
            runs += 1
    return runs


def declare_metric_summaries(loggers: Iterable[object]) -> int:
    """Declare in every W&B run among ``loggers`` that its summary keeps the best value of each metric of
    :data:`METRIC_SUMMARIES` (``define_metric(name, summary="min")``), plotted against ``trainer/global_step``.

    W&B ranks the runs of a sweep, and shows them in tables, by their summary, which is otherwise the last value
    logged. Call it on global rank 0 only. Returns how many W&B runs were updated.
    """
    runs = 0
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            for name, summary in METRIC_SUMMARIES.items():
                logger.experiment.define_metric(name, summary=summary, step_metric="trainer/global_step")
            runs += 1
    return runs


def drop_unset_wandb_settings(loggers: Iterable[object]) -> int:
    """Stop every ``WandbLogger`` among ``loggers`` from passing ``anonymous=None`` to ``wandb.init``: Lightning
    always passes it, and W&B warns that the (deprecated) setting has no effect whenever it is passed at all.
    Call it before the first log call; returns how many loggers were changed."""
    changed = 0
    for logger in loggers:
        settings = wandb_init_settings(logger) if isinstance(logger, WandbLogger) else None
        if isinstance(settings, dict) and "anonymous" in settings and settings["anonymous"] is None:
            del settings["anonymous"]
            changed += 1
    return changed


def sweep_parameters(environ: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """The swept parameters of this run when it is a sweep trial (``{"model.sigma_max": 10.0, ...}``), else ``None``:
    the file named by ``WANDB_SWEEP_PARAM_PATH``, which ``wandb agent`` and ``python -m ncsn_pl sweep`` write."""
    environ = os.environ if environ is None else environ
    path = environ.get(SWEEP_PARAM_PATH)
    return read_sweep_parameters(path) if path and Path(path).is_file() else None


# the numbers of a ``fid`` result (its JSON keys) that a sweep trial logs to its W&B run
FID_RESULT_KEYS = (*FID_COMMAND_GOALS, "kid_std", "is_std", "num_samples", "num_real")


def log_to_sweep_run(result: Mapping[str, Any], root: str | os.PathLike[str]) -> bool:
    """In a sweep trial (``wandb agent`` or ``python -m ncsn_pl sweep``), log a ``fid`` result to the trial's W&B run
    (under ``root``): its numbers (:data:`FID_RESULT_KEYS`, the sampler's ``nfe`` and the ``noisy_share``) and what
    they were computed from in the run's config. Outside a sweep it does nothing and returns ``False``.

    The run is named after the swept values, as a trained trial's; W&B goes offline without credentials.
    """
    parameters = sweep_parameters()
    if parameters is None and not os.environ.get("WANDB_SWEEP_ID"):
        return False
    log_fid_result(result, root, name=sweep_run_name(parameters) if parameters else None)
    return True


def log_fid_result(
    result: Mapping[str, Any],
    root: str | os.PathLike[str],
    *,
    project: str | None = None,
    name: str | None = None,
    run_id: str | None = None,
    step: int | None = None,
) -> str:
    """Log a ``fid`` result to a W&B run under ``root/wandb``: its numbers (:data:`FID_RESULT_KEYS`, the sampler's
    ``nfe``, ``nfe_max`` and the ``noisy_share``), with ``trainer/global_step`` = ``step`` when given, and what they
    were computed from in the run's config (``fid``). ``run_id`` adds them to that run (a training run: the result
    lands beside its curves), else a new run (``job_type`` fid) is made. W&B goes offline without credentials.
    Returns the run's id."""
    import wandb

    default_wandb_mode()
    Path(root).mkdir(parents=True, exist_ok=True)
    sampler = dict(result.get("sampler") or {})
    numbers: dict[str, Any] = {key: result[key] for key in FID_RESULT_KEYS if isinstance(result.get(key), (int, float))}
    numbers.update({key: sampler[key] for key in ("nfe", "nfe_max") if isinstance(sampler.get(key), (int, float))})
    if isinstance(result.get("noisy_share"), (int, float)):
        numbers["noisy_share"] = result["noisy_share"]
    if step is not None:
        numbers["trainer/global_step"] = step
    config = {"fid": {key: result.get(key) for key in ("source", "real", "sampler", "feature_extractor")}}
    run = wandb.init(dir=str(root), project=project, name=name, id=run_id, resume="allow" if run_id else None,
                     job_type=None if run_id else "fid", config=config)  # fmt: skip
    try:
        run.log(numbers)
    finally:
        run.finish()
    return run.id


def wandb_run_of(loggers: Iterable[object]) -> dict[str, str] | None:
    """The W&B run the first ``WandbLogger`` among ``loggers`` logs to (``id``, ``project``, ``save_dir``), or
    ``None``: written into checkpoints, so ``fid --wandb`` can put a result beside the run's training curves."""
    import wandb

    for logger in loggers:
        if not isinstance(logger, WandbLogger):
            continue
        started = wandb.run if wandb.run is not None and wandb.run.id == logger.version else None  # the logger's
        if logger.version and not getattr(started, "disabled", False):  # WANDB_MODE=disabled: no run to name
            run = {"id": str(logger.version), "project": logger.name, "save_dir": logger.save_dir}
            return {key: str(value) for key, value in run.items() if value}
    return None


def wandb_has_credentials(environ: Mapping[str, str] | None = None) -> bool:
    """Whether W&B could log in without asking: an API key or identity token in the environment, or a ``.netrc``
    entry for its host (what ``wandb login`` writes)."""
    environ = os.environ if environ is None else environ
    if environ.get("WANDB_API_KEY") or environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    path = Path(environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def default_wandb_mode(environ: MutableMapping[str, str] | None = None) -> str | None:
    """Log to W&B offline when no mode is chosen (``WANDB_MODE``) and W&B has no credentials, instead of failing
    at the first log call; returns the mode chosen here (``None`` when the environment already decides).

    The runs land in ``<save_dir>/wandb/offline-run-*``; ``wandb sync`` uploads them later.
    """
    environ = os.environ if environ is None else environ
    if environ.get("WANDB_MODE") or wandb_has_credentials(environ):
        return None
    environ["WANDB_MODE"] = "offline"
    return "offline"
