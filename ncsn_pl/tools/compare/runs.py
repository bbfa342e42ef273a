"""The runs a comparison reads: run folders, sweep folders, offline W&B runs and W&B projects, one row each.

PATH is a run folder (a CSVLogger ``version_N`` folder, or any folder above run folders), a sweep folder
(``sweep.json`` from ``python -m ncsn_pl sweep``), an offline W&B run (``wandb/offline-run-*``), or
``entity/project`` read through the W&B API (online). Prints one row per run: its swept settings, the best and
last value of the metric, IS, loss, steps and run time, ranked as the sweep runner ranks trials (:func:`sort_rows`);
writes the table as ``runs.csv`` and ``runs.md`` and draws PNG plots of the metric against each swept setting and
over training steps.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ncsn_pl.runs.reading import (
    find_csv_runs,
    flatten_config,
    newest_csv_run,
    offline_run_dirs,
    read_metrics_csv,
    summarize_metric,
)
from ncsn_pl.runs.records import RUN_STATUS_FILE, goal_of, rank_runs, summary_value
from ncsn_pl.runs.status import cut_row_note, run_folder_status
from ncsn_pl.tools.compare.quality import fid_json_quality, run_quality
from ncsn_pl.tools.compare.rows import Comparison, RunRow, auto_resolved, row_from_metrics, varied
from ncsn_pl.tools.compare.wandb_runs import api_project_runs, api_rows, sweep_config, wandb_offline_run

__all__ = ["Comparison", "RunRow", "collect_runs", "sort_rows"]

DEFAULT_METRIC = "val/fid"
# the noise schedule: shown when the runs do not say what was swept
SCHEDULE_KEYS = ("model.sigma_max", "model.sigma_min", "model.num_scales", "model.step_lr", "model.n_steps_each",
                 "model.anneal_power")
# config keys that differ between runs without being settings
IGNORED_PREFIXES = ("trainer.default_root_dir", "trainer.logger", "trainer.callbacks", "trainer.enable_progress_bar",
                    "trainer.enable_model_summary", "ckpt_path", "config", "data.init_args.root",
                    "data.init_args.num_workers", "checkpoint.dirpath", "_")
HIGHER_IS_BETTER = re.compile(r"(^|/)(is|inception_score|acc\w*|precision|recall)$")
_PROJECT = re.compile(r"^[\w.-]+/[\w.-]+$")


# ---------------------------------------------------------------------------------------------- reading runs
def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _csv_run(run_dir: Path, name: str, metric: str, goal: str) -> RunRow:
    """A CSVLogger run folder (``metrics.csv``, ``config.yaml``), with the status the run recorded
    (:func:`~ncsn_pl.runs.status.run_folder_status`); listed as ``no metrics`` without a csv."""
    status, note = run_folder_status(run_dir)
    row = RunRow(run=name, path=str(run_dir), status=status, note=note)
    row.config = flatten_config(_read_yaml(run_dir / "config.yaml"))
    csv_path = run_dir / "metrics.csv"
    if not csv_path.is_file():
        return _without_metric(row, "no metrics", "no metrics.csv in the run folder")
    metrics = read_metrics_csv(csv_path)  # a last row cut short is left out
    row.note = _join(row.note, cut_row_note(csv_path))
    row_from_metrics(row, metrics, metric, goal)
    row.quality = run_quality(metrics, row.metric.best_step if row.metric else None, run_dir, metric)
    first = min((p.stat().st_mtime for p in (run_dir / "hparams.yaml", run_dir / "config.yaml") if p.is_file()),
                default=None)
    if first is not None:
        row.runtime_s = round(max(0.0, csv_path.stat().st_mtime - first), 1)
    if row.metric is None:
        missing = _join(f"metrics.csv has no {metric} column", cut_row_note(csv_path))
        return _without_metric(row, f"no {metric}", missing)
    return row


def _join(*notes: str) -> str:
    return "; ".join(note for note in notes if note)


def _without_metric(row: RunRow, status: str, note: str) -> RunRow:
    """A run without the metric: ``status`` when it ended normally or nobody knows how, else how it ended (the
    note says both)."""
    if row.status in ("finished", "unknown"):
        row.status, row.note = status, note
    else:
        row.note = _join(note, row.note)
    return row


def _fid_json_run(path: Path, name: str, metric: str, goal: str) -> RunRow:
    """A sweep trial that ran the ``fid`` command: one value of each number in its JSON (at step 0)."""
    row = RunRow(run=name, path=str(path.parent), status="finished")
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        row.status, row.note = "no metrics", f"{path} cannot be read: {error}"
        return row
    numbers = {key: [(0, float(value))] for key, value in record.items()
               if isinstance(value, (int, float)) and not isinstance(value, bool)}  # fmt: skip
    row_from_metrics(row, numbers, metric, goal)
    row.inception_score = record.get("is")
    row.runtime_s = record.get("seconds")
    row.quality = fid_json_quality(record)
    if row.metric is None:
        row.status, row.note = f"no {metric}", f"{path.name} has no {metric}"
    return row


def _sweep_runs(sweep_dir: Path, metric: str, goal: str, prefix: str) -> tuple[list[RunRow], list[str], str | None]:
    """The trials of a sweep folder; their parameters are the settings."""
    state = json.loads((sweep_dir / "sweep.json").read_text())
    sweep = state.get("sweep") or {}
    rows = []
    for trial in state.get("trials", []):
        trial_dir = sweep_dir / trial.get("dir", trial["name"])
        run = newest_csv_run(trial_dir)
        wandb_runs = offline_run_dirs(trial_dir) if trial_dir.is_dir() else []
        if run is not None:
            row = _csv_run(run, prefix + trial["name"], metric, goal)
        elif (trial_dir / "fid.json").is_file():
            row = _fid_json_run(trial_dir / "fid.json", prefix + trial["name"], metric, goal)
        elif wandb_runs:
            row = wandb_offline_run(wandb_runs[-1], prefix + trial["name"], metric, goal)
        else:
            row = RunRow(run=prefix + trial["name"], path=str(trial_dir), status="no metrics",
                         note="the trial left no run folder")
        row.resolved = auto_resolved(trial.get("params", {}), row.config)
        row.config.update(trial.get("params", {}))
        if trial.get("duration_s") is not None:
            row.runtime_s = trial["duration_s"]
        if trial.get("state") != "finished":
            row.status = trial.get("state", row.status)
            row.note = trial.get("error") or row.note
        elif row.status == "unknown":  # a trial folder from before runs recorded their end: the sweep's record
            row.status, row.note = "finished", ""
        rows.append(row)
    sweep_goal = None
    if isinstance(sweep.get("metric"), Mapping) and sweep["metric"].get("name") == metric:
        sweep_goal = sweep["metric"].get("goal", "minimize")
    return rows, varied(sweep.get("parameters") or {}), sweep_goal


def _local_runs(path: Path, metric: str, goal: str, prefix: str) -> tuple[list[RunRow], list[str], str | None]:
    """Every run under a local folder: sweep folders, CSV run folders, offline W&B runs without a CSV twin."""
    if (path / "sweep.json").is_file():
        return _sweep_runs(path, metric, goal, prefix)
    if list(path.glob("run-*.wandb")):
        return [wandb_offline_run(path, None, metric, goal)], [], None
    rows, swept, goal_found = [], [], None
    sweep_dirs = sorted(p.parent for p in path.rglob("sweep.json"))
    for sweep_dir in sweep_dirs:
        sub_rows, sub_swept, sub_goal = _sweep_runs(sweep_dir, metric, goal, prefix + _rel(sweep_dir, path) + "/")
        rows += sub_rows
        swept += [k for k in sub_swept if k not in swept]
        goal_found = goal_found or sub_goal

    def in_sweep(p: Path) -> bool:
        return any(p == s or s in p.parents for s in sweep_dirs)

    run_dirs = {p for p in find_csv_runs(path) if not in_sweep(p)}
    # folders a run wrote (config.yaml, hparams.yaml, checkpoints/) but that hold no metrics.csv
    for marker in ("config.yaml", "hparams.yaml", RUN_STATUS_FILE):
        for p in path.rglob(marker):
            if "wandb" not in p.relative_to(path).parts and not in_sweep(p.parent) and p.parent not in run_dirs:
                if (p.parent / "checkpoints").is_dir() or marker != "config.yaml" or p.parent.name.startswith(
                        "version_"):
                    run_dirs.add(p.parent)
    for run_dir in sorted(run_dirs):
        rows.append(_csv_run(run_dir, prefix + _rel(run_dir, path), metric, goal))
    roots_with_csv = {d.parent for d in run_dirs} | run_dirs
    for wandb_dir in sorted(path.rglob("wandb")):
        root = wandb_dir.parent
        if not wandb_dir.is_dir() or in_sweep(root) or root in roots_with_csv:
            continue
        for run_dir in offline_run_dirs(root):
            rows.append(wandb_offline_run(run_dir, None, metric, goal))
    return rows, swept, goal_found


def _rel(path: Path, base: Path) -> str:
    rel = str(path.relative_to(base)) if path != base else path.name
    return rel if rel != "." else path.resolve().name


def _default_goal(metric: str) -> str:
    return goal_of(metric) or ("maximize" if HIGHER_IS_BETTER.search(metric) else "minimize")


def _sweep_metric(paths: Sequence[str], api_runs: Mapping[str, Sequence[Any]]) -> str | None:
    """The metric of the first sweep found under ``paths`` (``sweep.json``) or among the W&B runs."""
    for raw in paths:
        path = Path(raw)
        files = sorted(path.rglob("sweep.json")) if path.is_dir() else []
        for file in files:
            with contextlib.suppress(OSError, json.JSONDecodeError, AttributeError, TypeError, KeyError):
                return str(json.loads(file.read_text())["sweep"]["metric"]["name"])
        for run in api_runs.get(raw, []):
            name = (sweep_config(run).get("metric") or {}).get("name")
            if name:
                return str(name)
    return None


def collect_runs(paths: Sequence[str], metric: str | None = None, goal: str | None = None) -> Comparison:
    """Read the runs under ``paths`` (see the module docstring) and sort them by ``metric``.

    Args:
        paths: run folders, sweep folders, offline W&B runs, or ``entity/project``.
        metric: the metric to compare (``val/fid``, ``val/loss``, ...); default: the metric of the sweep found
            under ``paths`` (its ``sweep.json``, or the W&B sweep of the project's runs), else ``val/fid``.
        goal: ``minimize`` or ``maximize``; default: a sweep's own goal for its metric, else maximize for
            IS-like metrics and minimize otherwise.

    Raises:
        FileNotFoundError: a PATH that is neither a folder nor ``entity/project``.
        LookupError: ``entity/project`` could not be read from W&B.
    """
    for raw in paths:
        if not Path(raw).exists() and not _PROJECT.match(raw):
            raise FileNotFoundError(f"{raw!r} is neither a folder nor entity/project.")
    api_runs = {raw: api_project_runs(raw) for raw in paths if not Path(raw).exists()}
    metric = metric or _sweep_metric(paths, api_runs) or DEFAULT_METRIC
    rows: list[RunRow] = []
    swept: list[str] = []
    found_goal = None
    reading_goal = goal or _default_goal(metric)
    for raw in paths:
        path = Path(raw)
        prefix = f"{path.resolve().name}/" if len(paths) > 1 else ""
        if raw in api_runs:
            (new_rows, new_swept), sweep_goal = api_rows(raw, api_runs[raw], metric, reading_goal), None
        else:
            new_rows, new_swept, sweep_goal = _local_runs(path, metric, reading_goal, prefix)
        rows += new_rows
        swept += [k for k in new_swept if k not in swept]
        found_goal = found_goal or sweep_goal
    goal = goal or found_goal or reading_goal
    if goal != reading_goal:  # a sweep said otherwise: recompute best values
        for row in rows:
            row.metric = summarize_metric(row.history, goal)
    settings = swept + [k for k in _differing_keys(rows) if k not in swept]
    if not settings:
        settings = [k for k in SCHEDULE_KEYS if any(k in row.config for row in rows)]
    return Comparison(rows=sort_rows(rows, metric, goal), settings=settings, metric=metric, goal=goal)


def _differing_keys(rows: Iterable[RunRow]) -> list[str]:
    rows = [row for row in rows if row.config]
    if len(rows) < 2:
        return []
    keys = sorted({k for row in rows for k in row.config})
    differing = []
    for key in keys:
        if key.startswith(IGNORED_PREFIXES):
            continue
        # runs without the key (a failed trial's bare parameters) do not make it differ
        values = {json.dumps(row.config[key], sort_keys=True, default=str) for row in rows if key in row.config}
        if len(values) > 1 and not any(isinstance(row.config.get(key), (list, dict)) for row in rows):
            differing.append(key)
    return differing


def sort_rows(rows: list[RunRow], metric: str, goal: str) -> list[RunRow]:
    """The ranked runs first, in rank order, then the others in their original order, with ``rank`` set.

    Ranked as the sweep runner ranks its trials (:func:`~ncsn_pl.runs.records.rank_runs`): the finished runs
    with the metric, by the value their W&B summary holds (the best one for a metric with a declared summary, such as
    ``val/fid``, the last one otherwise); failed, interrupted, killed, running and unknown runs are listed, not
    ranked.
    """
    summaries = {id(row): summary_value(metric, [value for _, value in row.history]) for row in rows}
    ranked = rank_runs(rows, goal, lambda row: summaries[id(row)], lambda row: row.status == "finished")
    for row in rows:
        row.rank = None
    for position, row in enumerate(ranked, 1):
        row.rank = position if math.isfinite(summaries[id(row)]) else None
    ranked_ids = {id(row) for row in ranked}
    return ranked + [row for row in rows if id(row) not in ranked_ids]
