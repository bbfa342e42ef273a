"""One row of a comparison (a run, its settings and its metric) and the sorted rows with the settings shown."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ncsn_pl.runs.reading import MetricSummary, summarize_metric

__all__ = ["INCEPTION_SCORE", "LOSS", "Comparison", "RunRow", "auto_resolved", "row_from_metrics", "varied"]

INCEPTION_SCORE, LOSS = "val/is", "val/loss"


@dataclass
class RunRow:
    """One run of the comparison.

    Attributes:
        run: a short name (``trial-003``, ``version_0``, a W&B run name).
        path: the run folder, or the W&B run's path.
        status: ``finished``, ``failed``, ``interrupted``, ``running``, ``killed`` or ``unknown`` (as the run
            recorded it: :mod:`~ncsn_pl.runs.status`), ``no metrics`` (a run folder without
            ``metrics.csv``) or ``no <metric>`` (metrics, but not this one).
        config: the flat (dotted) config, with a sweep trial's parameters.
        metric: the metric's best and last value, or ``None``.
        history: the metric's ``[(step, value), ...]``.
        inception_score: the last ``val/is``; loss: the last ``val/loss`` (else ``train/loss``).
        steps: the last step logged; runtime_s: the run time in seconds (W&B's ``_runtime``, a sweep trial's
            wall time, else the time between the run's first and last file writes).
        note: why the run has no metric (a failed trial's error, ...).
        resolved: the numbers that ``auto`` settings resolved to (``{"model.sigma_max": 4.74}``), read from the run's
            saved config where the sweep or the config said ``auto``.
        quality: what the metric's sample quality was computed from, at its best step (samples, real images, NFE,
            feature extractor, precision, recall; :func:`~ncsn_pl.tools.compare.quality.run_quality`).
        rank: the run's place among the ranked runs (finished, with a finite summary value; see
            :func:`~ncsn_pl.tools.compare.runs.sort_rows`), else None.
    """

    run: str
    path: str
    status: str
    config: dict[str, Any] = field(default_factory=dict)
    metric: MetricSummary | None = None
    history: list[tuple[int, float]] = field(default_factory=list)
    inception_score: float | None = None
    loss: float | None = None
    steps: int | None = None
    runtime_s: float | None = None
    note: str = ""
    resolved: dict[str, Any] = field(default_factory=dict)
    quality: dict[str, Any] = field(default_factory=dict)
    rank: int | None = None

    def setting(self, key: str) -> Any:
        """The value of a setting, the resolved number for an ``auto`` one."""
        return self.resolved.get(key, self.config.get(key))


@dataclass
class Comparison:
    """Rows sorted by the metric (runs without it last), the settings shown, the metric and its goal."""

    rows: list[RunRow]
    settings: list[str]
    metric: str
    goal: str
    files: list[Path] = field(default_factory=list)


def _last(history: Sequence[tuple[int, float]] | None) -> float | None:
    return history[-1][1] if history else None


def row_from_metrics(row: RunRow, metrics: Mapping[str, list[tuple[int, float]]], metric: str, goal: str) -> RunRow:
    row.history = list(metrics.get(metric, []))
    row.metric = summarize_metric(row.history, goal)
    row.inception_score = _last(metrics.get(INCEPTION_SCORE))
    row.loss = _last(metrics.get(LOSS)) if metrics.get(LOSS) else _last(metrics.get("train/loss"))
    steps = [step for values in metrics.values() for step, _ in values]
    row.steps = max(steps) if steps else None
    return row


def auto_resolved(params: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers a run's saved ``config`` holds for the ``params`` given as ``auto``."""
    return {
        key: config[key]
        for key, value in params.items()
        if value == "auto" and isinstance(config.get(key), (int, float)) and not isinstance(config[key], bool)
    }


def varied(parameters: Mapping[str, Any]) -> list[str]:
    """The swept parameters that take more than one value (a ``value:`` is a constant of the sweep)."""
    return [name for name, spec in parameters.items() if not (isinstance(spec, Mapping) and set(spec) == {"value"})]
