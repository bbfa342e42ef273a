"""Reading runs back without a server: ``metrics.csv`` of the CSVLogger and offline W&B runs.

W&B works with no network and no account when ``WANDB_MODE=offline`` (runs are written to
``<save_dir>/wandb/offline-run-<time>-<id>/`` and can be uploaded later with ``wandb sync``) or
``WANDB_MODE=disabled`` (nothing is written). An offline run keeps its history, summary and config only in the
binary ``run-<id>.wandb`` log; ``wandb leet inspect`` (part of the ``wandb`` package) reads it back.
"""

from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "MetricSummary",
    "cut_metrics_row",
    "find_csv_runs",
    "newest_csv_run",
    "flatten_config",
    "offline_run_dirs",
    "read_metrics_csv",
    "read_offline_run",
    "summarize_metric",
    "summary_number",
]

History = list[tuple[int, float]]


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings into dotted keys: ``{"model": {"sigma_max": 1}}`` -> ``{"model.sigma_max": 1}``.

    Lists are kept as values (``trainer.logger`` is one key).
    """
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_config(value, name + "."))
        else:
            flat[name] = value
    return flat


def summary_number(value: Any) -> float | None:
    """A W&B summary value as a number: itself, or the one value of a ``define_metric`` summary such as
    ``{"min": 3.2}`` (``min``, ``max``, ``best``, ``last``, ``mean`` in that order of preference); else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, Mapping):
        for key in ("min", "max", "best", "last", "mean"):
            if isinstance(value.get(key), (int, float)) and not isinstance(value.get(key), bool):
                return float(value[key])
    return None


def offline_run_dirs(root: str | Path) -> list[Path]:
    """The W&B offline runs under ``root`` (``root/wandb/offline-run-*``, or ``root`` itself), by the start time in
    their names (to the second; runs started in the same second in the order of their ids)."""
    root = Path(root)
    if list(root.glob("run-*.wandb")):
        return [root]
    return sorted(p for p in (root / "wandb").glob("offline-run-*") if p.is_dir() and list(p.glob("run-*.wandb")))


def _leet(args: list[str], timeout: float) -> str:
    command = [sys.executable, "-m", "wandb", "leet", "inspect", *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as error:
        raise RuntimeError(f"`wandb leet inspect` took over {timeout:.0f} s on {args[-1]}") from error
    if done.returncode != 0:
        raise RuntimeError(f"`wandb leet inspect` failed on {args[-1]}: {done.stderr.strip()[-500:]}")
    return done.stdout


def read_offline_run(run: str | Path, history_keys: Iterable[str] = (), timeout: float = 120.0) -> dict[str, Any]:
    """Read an offline W&B run back with ``wandb leet inspect`` (no server, no account).

    Args:
        run: the run folder (``.../wandb/offline-run-<time>-<id>``) or its ``run-<id>.wandb`` file.
        history_keys: metrics whose logged history to return (reads every record; empty = skip).
        timeout: seconds allowed for each ``wandb leet`` call.

    Returns:
        ``{"name", "run_id", "project", "state", "config", "summary", "history"}``: ``config`` is the run's
        config (nested as logged), ``summary`` the last value of each metric (``_runtime`` in seconds,
        ``trainer/global_step``), ``history`` maps each requested key to ``[(step, value), ...]`` with the
        step ``trainer/global_step`` when logged, else W&B's ``_step``.

    Raises:
        RuntimeError: ``wandb leet`` failed or the output was not the expected JSON.
    """
    run = str(run)
    try:
        info = json.loads(_leet(["--summary", "--json", run], timeout))
    except json.JSONDecodeError as error:
        raise RuntimeError(f"`wandb leet inspect --summary --json {run}` printed no JSON") from error
    keys = list(history_keys)
    history: dict[str, list[tuple[int, float]]] = {key: [] for key in keys}
    if keys:
        for line in _leet(["--json", run], timeout).splitlines():
            if '"history"' not in line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            item = record.get("history", {}).get("item") if record.get("type") == "history" else None
            if not isinstance(item, dict):
                continue
            step = item.get("trainer/global_step", item.get("_step", 0))
            for key in keys:
                if isinstance(item.get(key), (int, float)):
                    history[key].append((int(step), float(item[key])))
    return {
        "name": info.get("name"),
        "run_id": info.get("run_id"),
        "project": info.get("project"),
        "state": info.get("state"),
        "config": info.get("config") or {},
        "summary": info.get("summary") or {},
        "history": history,
    }


# ---------------------------------------------------------------------------------------------- CSV runs
def read_metrics_csv(path: str | Path) -> dict[str, History]:
    """Read a CSVLogger ``metrics.csv`` into ``{column: [(step, value), ...]}``.

    Rows hold only the metrics logged at that step (other cells empty); empty and non-numeric cells are skipped,
    ``nan``/``inf`` are kept (a diverged run shows as such). The ``step`` and ``epoch`` columns are not metrics. A
    last row cut short (:func:`cut_metrics_row`) is left out.
    """
    history: dict[str, History] = {}
    text = Path(path).read_text()
    if cut_metrics_row(text) is not None:
        text = text[: text.rstrip("\r\n").rfind("\n") + 1]
    for row in csv.DictReader(io.StringIO(text, newline="")):
        try:
            step = int(float(row.get("step") or 0))
        except ValueError:
            step = 0
        for key, cell in row.items():
            if key in (None, "step", "epoch") or cell in (None, ""):
                continue
            try:
                value = float(cell)
            except ValueError:
                continue
            history.setdefault(key, []).append((step, value))
    return history


def cut_metrics_row(text: str) -> str | None:
    """The last row of a ``metrics.csv`` (its text) when it was cut short, else None.

    The CSV writer ends every row with a line break and writes a cell for each column of the header, empty or not,
    so a last row without its line break, or with fewer cells than the header, is one that a run stopped writing
    (killed, out of disk): ``0,299,1`` of ``0,299,1.2345,...``. Its numbers are not the ones logged.
    """
    lines = text.splitlines()
    if len(lines) < 2:
        return None
    header, last = next(csv.reader([lines[0]])), lines[-1]
    if not text.endswith(("\n", "\r")) or len(next(csv.reader([last]), [])) < len(header):
        return last
    return None


def newest_csv_run(root: str | Path) -> Path | None:
    """The folder under ``root`` whose ``metrics.csv`` changed last (a run's newest version), or None."""
    runs = find_csv_runs(root) if Path(root).is_dir() else []
    return max(runs, key=lambda p: (p / "metrics.csv").stat().st_mtime) if runs else None


def find_csv_runs(root: str | Path) -> list[Path]:
    """Folders under ``root`` (itself included) holding a ``metrics.csv``, outside any ``wandb`` folder."""
    root = Path(root)
    found = [p.parent for p in root.rglob("metrics.csv") if "wandb" not in p.relative_to(root).parts[:-1]]
    if (root / "metrics.csv").is_file() and root not in found:
        found.append(root)
    return sorted(set(found))


@dataclass(frozen=True)
class MetricSummary:
    """The best and last value of one metric over a run.

    Attributes:
        best: the minimum (``goal="minimize"``) or maximum of the finite values; ``nan`` if none is finite.
        best_step: the step of ``best`` (its first occurrence).
        last: the last logged value (may be ``nan``).
        last_step: the step of ``last``.
        count: how many values were logged.
    """

    best: float
    best_step: int
    last: float
    last_step: int
    count: int


def summarize_metric(history: Sequence[tuple[int, float]], goal: str = "minimize") -> MetricSummary | None:
    """Best and last value of a metric's ``[(step, value), ...]``; ``None`` when nothing was logged."""
    if goal not in ("minimize", "maximize"):
        raise ValueError(f"goal must be 'minimize' or 'maximize', got {goal!r}.")
    if not history:
        return None
    finite = [(step, value) for step, value in history if math.isfinite(value)]
    if finite:
        pick = min if goal == "minimize" else max
        best_step, best = pick(finite, key=lambda item: item[1])
    else:
        best_step, best = history[-1][0], math.nan
    last_step, last = history[-1]
    return MetricSummary(best=best, best_step=best_step, last=last, last_step=last_step, count=len(history))
