"""Reading a trial's metric back: its ``metrics.csv`` (a trained trial), its ``fid.json`` (a trial that scores a
checkpoint), else its offline W&B run."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ncsn_pl.runs.reading import newest_csv_run, offline_run_dirs, read_metrics_csv, read_offline_run, summary_number

__all__ = ["read_trial_metric"]


def read_trial_metric(trial_dir: str | Path, metric: str, run_id: str | None = None) -> tuple[list, str]:
    """The ``[(step, value), ...]`` of ``metric`` logged by the run in ``trial_dir``, and where it was read.

    The trial's ``metrics.csv`` (the newest, if the trial holds several runs) is read first, then the ``fid.json``
    the ``fid`` command writes into the trial's folder (one value, at step 0); without the metric there, the
    offline W&B run (``wandb/offline-run-*-<run_id>``) is read with ``wandb leet`` (its history, else
    its summary, a number or a ``{"min": ...}`` of ``define_metric``). Returns ``([], reason)`` when neither has it.
    """
    trial_dir = Path(trial_dir)
    run = newest_csv_run(trial_dir)
    if run is not None:
        history = read_metrics_csv(run / "metrics.csv").get(metric, [])
        if history:
            return history, str(run.relative_to(trial_dir) / "metrics.csv")
    fid_json = trial_dir / "fid.json"
    if fid_json.is_file():
        try:
            value = json.loads(fid_json.read_text()).get(metric)
        except (OSError, json.JSONDecodeError) as error:
            return [], f"fid.json cannot be read: {error}"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return [(0, float(value) if math.isfinite(value) else math.nan)], "fid.json"
    wandb_runs = [p for p in offline_run_dirs(trial_dir) if run_id is None or p.name.endswith(f"-{run_id}")]
    if wandb_runs:
        try:
            record = read_offline_run(wandb_runs[-1], history_keys=[metric])
        except RuntimeError as error:
            return [], f"no {metric} in metrics.csv, and the W&B run could not be read: {error}"
        history = record["history"].get(metric) or []
        value = summary_number(record["summary"].get(metric))
        if not history and value is not None:
            history = [(int(record["summary"].get("trainer/global_step", 0)), value)]
        if history:
            return history, str(wandb_runs[-1].relative_to(trial_dir))
    where = "metrics.csv" if run is not None else "no metrics.csv"
    return [], f"the run logged no {metric!r} ({where}{', no W&B run' if not wandb_runs else ', W&B run'})"
