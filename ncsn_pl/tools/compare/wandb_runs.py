"""Runs logged to Weights & Biases: offline runs on disk (read with ``wandb leet``) and a project's runs through the
W&B API (online)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ncsn_pl.runs.reading import flatten_config, read_offline_run, summary_number
from ncsn_pl.tools.compare.quality import run_quality
from ncsn_pl.tools.compare.rows import INCEPTION_SCORE, LOSS, RunRow, auto_resolved, row_from_metrics, varied

__all__ = ["api_project_runs", "api_rows", "sweep_config", "wandb_offline_run"]


def wandb_offline_run(run_dir: Path, name: str | None, metric: str, goal: str) -> RunRow:
    """An offline W&B run read back with ``wandb leet`` (used when no CSV run sits next to it)."""
    row = RunRow(run=name or run_dir.name, path=str(run_dir), status="finished")
    try:
        record = read_offline_run(run_dir, history_keys=[metric, INCEPTION_SCORE, LOSS, "train/loss"])
    except RuntimeError as error:
        row.status, row.note = "no metrics", str(error)
        return row
    row.run = name or record.get("name") or run_dir.name
    row.config, row.resolved = wandb_config(record["config"])
    row_from_metrics(row, record["history"], metric, goal)
    summary = record["summary"]
    row.quality = run_quality(
        {k: [(0, v)] for k, v in summary.items() if isinstance(v, (int, float))}, None, metric=metric
    )
    row.steps = summary.get("trainer/global_step", row.steps)
    row.runtime_s = summary.get("_runtime")
    if record.get("state") not in (None, "finished"):
        row.status = str(record["state"])
    if row.metric is None:
        row.status, row.note = f"no {metric}", f"the W&B run has no {metric}"
    return row


def wandb_config(config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A W&B run's config as flat keys, and the numbers of its ``auto`` sweep parameters.

    The run config holds the whole resolved config nested (``log_config``) and, in a sweep, the swept values under
    their dotted names (``"model.sigma_max": "auto"``, as the agent sets them): the swept values are shown, the
    nested numbers are what ``auto`` resolved to.
    """
    swept = {k: v for k, v in config.items() if "." in k and not k.startswith("_")}
    nested = {
        k: v
        for k, v in flatten_config({k: v for k, v in config.items() if k not in swept}).items()
        if not k.startswith("_")
    }
    return {**nested, **swept}, auto_resolved(swept, nested)


def wandb_api() -> Any:
    import wandb

    return wandb.Api(timeout=30)


def api_project_runs(project: str) -> list[Any]:
    """The runs of ``entity/project`` through the W&B API (needs the network and ``wandb login``)."""
    try:
        return list(wandb_api().runs(project))
    except Exception as error:  # no network, no key, no such project: all surface here
        raise LookupError(
            f"could not read {project} from W&B ({type(error).__name__}: {error}); offline, "
            "compare the local run or sweep folders instead"
        ) from error


def api_rows(project: str, runs: Sequence[Any], metric: str, goal: str) -> tuple[list[RunRow], list[str]]:
    """Rows of W&B API runs (summaries may be ``define_metric`` dicts such as ``{"min": 31.2}``)."""
    rows, swept = [], []
    for run in runs:
        row = RunRow(run=str(run.name), path=f"{project}/{run.id}", status=str(run.state))
        row.config, row.resolved = wandb_config(dict(run.config))
        keys = [metric, INCEPTION_SCORE, LOSS, "train/loss"]
        metrics: dict[str, list[tuple[int, float]]] = {k: [] for k in keys}
        items = list(run.scan_history(keys=[metric, "trainer/global_step"])) or list(run.scan_history(keys=[metric]))
        for item in items:
            step = item.get("trainer/global_step", item.get("_step", 0))
            if isinstance(item.get(metric), (int, float)):
                metrics[metric].append((int(step), float(item[metric])))
        summary = dict(run.summary)
        for key in keys[1:]:
            if summary_number(summary.get(key)) is not None:
                metrics[key] = [(int(summary.get("trainer/global_step", 0)), summary_number(summary[key]))]
        row_from_metrics(row, metrics, metric, goal)
        row.steps = summary.get("trainer/global_step", row.steps)
        row.runtime_s = summary.get("_runtime")
        if row.metric is None and row.status == "finished":
            row.status = f"no {metric}"
        swept += [name for name in varied(sweep_config(run).get("parameters") or {}) if name not in swept]
        rows.append(row)
    return rows, swept


def sweep_config(run: Any) -> dict[str, Any]:
    config = getattr(getattr(run, "sweep", None), "config", None)
    return config if isinstance(config, dict) else {}
