"""What a run records about itself for the trackers, with no framework: which value of each metric the project logs
is the best one (the W&B summary each run declares, a sweep's goal, and :func:`rank_runs`, the one rule by which the
offline runner and ``compare`` rank runs), how a run folder's run ended (``run_status.json``), and a sweep trial's
parameters file and run name (written by ``wandb agent`` or ``python -m ncsn_pl sweep``, read by the trial)."""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "FID_COMMAND_GOALS",
    "METRIC_SUMMARIES",
    "RUN_LOCK_FILE",
    "RUN_STATES",
    "RUN_STATUS_FILE",
    "SWEEP_PARAM_PATH",
    "goal_of",
    "rank_runs",
    "read_run_status",
    "read_sweep_parameters",
    "summary_value",
    "sweep_run_name",
    "write_run_status",
    "write_sweep_parameters",
]

# The value a run's W&B summary keeps for each metric, as W&B's ``define_metric(name, summary=...)``: the best one,
# not the last one (W&B's default), so a sweep ranks its runs by their best value.
METRIC_SUMMARIES = {
    "val/loss": "min",
    "val/fid": "min",
    "val/kid": "min",
    "val/is": "max",
    "val/precision": "max",
    "val/recall": "max",
    "val/sliced_wasserstein": "min",
    "val/mode_weight_error": "min",
}
# the numbers of the ``fid`` command (its JSON keys, logged once by a sweep trial that scores a checkpoint)
FID_COMMAND_GOALS = {"fid": "min", "kid": "min", "is": "max", "precision": "max", "recall": "max"}


def goal_of(metric: str) -> str | None:
    """``"minimize"`` or ``"maximize"`` for a metric of :data:`METRIC_SUMMARIES` or :data:`FID_COMMAND_GOALS`, else
    ``None``."""
    summary = METRIC_SUMMARIES.get(metric, FID_COMMAND_GOALS.get(metric))
    return None if summary is None else {"min": "minimize", "max": "maximize"}[summary]


def summary_value(metric: str, values: Sequence[float]) -> float | None:
    """The value W&B's run summary holds for ``metric`` after ``values`` were logged (in order): the min or max of
    the finite values for a metric of :data:`METRIC_SUMMARIES` (``nan`` when none is finite), else the last one."""
    if not values:
        return None
    summary = METRIC_SUMMARIES.get(metric)
    if summary is None:
        return float(values[-1])
    finite = [float(v) for v in values if math.isfinite(v)]
    if not finite:
        return math.nan
    return min(finite) if summary == "min" else max(finite)


Run = TypeVar("Run")


def rank_runs(
    runs: Sequence[Run], goal: str, summary: Callable[[Run], float | None], finished: Callable[[Run], bool]
) -> list[Run]:
    """The runs of a sweep in rank order, as W&B ranks them and as both the offline sweep runner and ``compare`` do.

    Only finished runs with a metric are ranked, by their summary value (:func:`summary_value`: the best value of a
    metric with a declared summary, the last one otherwise), best first for ``goal``; a non-finite summary (a
    diverged run) ranks last; ties keep the runs' order. Failed, interrupted and running runs are not ranked.

    Args:
        runs: the runs (trial records, table rows, ...).
        goal: ``"minimize"`` or ``"maximize"``.
        summary: a run's summary value, or None when it logged the metric never.
        finished: whether a run finished.
    """
    if goal not in ("minimize", "maximize"):
        raise ValueError(f"goal must be 'minimize' or 'maximize', got {goal!r}.")
    sign = 1.0 if goal == "minimize" else -1.0
    scored = [(run, value) for run in runs if finished(run) and (value := summary(run)) is not None]

    def key(item: tuple[int, tuple[Run, float]]) -> tuple[int, float, int]:
        index, (_, value) = item
        return (0, sign * value, index) if math.isfinite(value) else (1, 0.0, index)

    return [run for _, (run, _) in sorted(enumerate(scored), key=key)]


# the lock a live run holds on its folder (:class:`~ncsn_pl.system.locks.ProcessLock`), and the record of how it ended
RUN_LOCK_FILE = ".run.lock"
RUN_STATUS_FILE = "run_status.json"
# what ``run_status.json`` says: ``running`` from the moment the run takes its folder, then how it ended
RUN_STATES = ("running", "finished", "interrupted", "failed")


def write_run_status(folder: str | Path, status: str, reason: str = "") -> Path:
    """Record in ``folder/run_status.json`` (atomically) where the run stands: ``running`` when it takes the folder,
    then ``finished``, ``interrupted`` (SIGTERM, preemption, Ctrl-C: a checkpoint to resume from was written) or
    ``failed`` (an exception), with the time (UTC, ISO 8601) and ``reason`` (the error, the signal)."""
    from ncsn_pl.system.files import atomic_write_json  # imports torch: only where a run writes

    if status not in RUN_STATES:
        raise ValueError(f"A run's status is one of {', '.join(RUN_STATES)}, got {status!r}.")
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    record = {"status": status, "time": now, **({"reason": reason} if reason else {})}
    return atomic_write_json(record, Path(folder) / RUN_STATUS_FILE)


def read_run_status(folder: str | Path) -> dict[str, Any] | None:
    """The ``run_status.json`` of a run folder, or None when there is none (a folder written before runs recorded
    it, or by another logger) or it cannot be read."""
    try:
        record = json.loads((Path(folder) / RUN_STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


# the environment variable naming a sweep trial's parameters file (wandb's ``config-<run id>.yaml``: a line
# ``wandb_version: 1``, then ``{key: {"value": v}}`` YAML); ``wandb agent`` sets it, and so does the offline runner
SWEEP_PARAM_PATH = "WANDB_SWEEP_PARAM_PATH"


def write_sweep_parameters(path: str | Path, parameters: Mapping[str, Any]) -> None:
    """Write a trial's parameters as ``wandb agent`` does (wandb's ``config_util.save_config_file_from_dict``)."""
    import yaml

    body = yaml.safe_dump({key: {"value": value} for key, value in parameters.items()}, sort_keys=False)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("wandb_version: 1\n\n" + body)


def read_sweep_parameters(path: str | Path) -> dict[str, Any]:
    """The ``{key: value}`` of a parameters file written by ``wandb agent`` or :func:`write_sweep_parameters`."""
    import yaml

    loaded = yaml.safe_load(Path(path).read_text()) or {}
    return {
        key: value["value"] if isinstance(value, Mapping) and "value" in value else value
        for key, value in loaded.items()
        if key != "wandb_version"
    }


def sweep_run_name(parameters: Mapping[str, Any]) -> str:
    """A readable run name from a trial's swept values, unique within the sweep: ``sigma_max=10 num_scales=20``.

    Keys are shortened to their last part unless two parameters share it (``model.seed``, ``data.seed``); floats
    keep 6 significant digits.
    """
    last = [key.rsplit(".", 1)[-1] for key in parameters]
    shown = [short if last.count(short) == 1 else key for key, short in zip(parameters, last, strict=True)]
    values = [f"{v:.6g}" if isinstance(v, float) else str(v) for v in parameters.values()]
    return " ".join(f"{name}={value}" for name, value in zip(shown, values, strict=True))
