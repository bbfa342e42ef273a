"""What each run's sample-quality numbers were computed from, for the comparison table: how many samples and real
images, the sampler's network evaluations (NFE), the feature extractor, and improved precision and recall.

A FID of 1,000 samples is not comparable with one of 50,000 (FID is biased upwards for small sets), nor one made
with another feature extractor, so the table shows them next to the metric. They are read at the metric's best
step: from the ``<run>/sample_quality.jsonl`` record of the metric nearest that step (``SampleQualityMonitor`` and
``ToySampleQuality`` write one per evaluation; the logger may count a validation's step one lower than the trainer),
else from the logged ``val/fid_num_samples``, ``val/fid_num_real``, ``val/nfe``, ``val/precision`` and
``val/recall``. A metric that is not computed from samples (``val/loss``) has none of these columns.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["QUALITY_COLUMNS", "fid_json_quality", "quality_cells", "quality_columns", "run_quality"]

QUALITY_COLUMNS = ("samples", "real", "NFE", "features", "precision", "recall")
_LOGGED = {
    "samples": "val/fid_num_samples",
    "real": "val/fid_num_real",
    "NFE": "val/nfe",
    "precision": "val/precision",
    "recall": "val/recall",
}
_RECORDED = {"samples": "num_samples", "real": "num_real", "precision": "precision", "recall": "recall"}
_SAMPLE_METRICS = ("val/fid", "val/kid", "val/inception_score", "val/precision", "val/recall")
_ID_TAIL = re.compile(r"(-[0-9a-f]{16})?-(round8bit|float)$")


def short_extractor(feature_id: str) -> str:
    """A feature extractor id without its weights hash and quantisation (``inception-v3-compat-pool3-tf1resize``)."""
    return _ID_TAIL.sub("", feature_id)


def _at(history: Sequence[tuple[int, float]] | None, step: int | None) -> float | None:
    if not history:
        return None
    values = [v for s, v in history if s == step]
    return values[-1] if values else history[-1][1]


def _count(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _jsonl_record(run_dir: Path, step: int | None, metric: str | None) -> dict[str, Any] | None:
    """The record of ``metric`` nearest ``step`` (the last one when ``step`` is None)."""
    path = run_dir / "sample_quality.jsonl"
    if not path.is_file():
        return None
    key = metric.split("/", 1)[-1] if metric else None
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash
        if isinstance(record, dict) and (key is None or key in record):
            records.append(record)
    if not records:
        return None
    if step is None:
        return records[-1]
    return min(reversed(records), key=lambda r: abs(int(r.get("step", 0)) - step))


def run_quality(metrics: Mapping[str, Sequence[tuple[int, float]]], step: int | None,
                run_dir: str | Path | None = None, metric: str | None = None) -> dict[str, Any]:  # fmt: skip
    """The columns of :data:`QUALITY_COLUMNS` one run has, at ``step`` (the metric's best step).

    Args:
        metrics: the run's logged metrics, ``{key: [(step, value), ...]}``.
        step: the step to read (values logged last are used when none was logged there).
        run_dir: the run folder, for ``sample_quality.jsonl``.
        metric: the compared metric; None reads any record.
    """
    record = _jsonl_record(Path(run_dir), step, metric) if run_dir is not None else None
    if record is None and metric is not None and not metric.startswith(_SAMPLE_METRICS):
        return {}  # not a metric of samples
    quality = {name: _count(_at(metrics.get(key), step)) for name, key in _LOGGED.items()}
    if record is not None:
        for name, key in _RECORDED.items():
            if record.get(key) is not None:
                quality[name] = record[key]
        sampler = record.get("sampler")
        if isinstance(sampler, Mapping) and sampler.get("nfe") is not None:
            quality["NFE"] = sampler["nfe"]
        elif record.get("nfe") is not None:
            quality["NFE"] = record["nfe"]
        if record.get("feature_extractor"):
            quality["features"] = short_extractor(str(record["feature_extractor"]))
    return {k: v for k, v in quality.items() if v is not None}


def fid_json_quality(record: Mapping[str, Any]) -> dict[str, Any]:
    """The columns of :data:`QUALITY_COLUMNS` a ``fid`` command's JSON record holds."""
    quality = {name: record.get(key) for name, key in _RECORDED.items()}
    sampler = record.get("sampler")
    if isinstance(sampler, Mapping):
        quality["NFE"] = sampler.get("nfe")
    if record.get("feature_extractor"):
        quality["features"] = short_extractor(str(record["feature_extractor"]))
    return {k: v for k, v in quality.items() if v is not None}


def quality_columns(qualities: Sequence[Mapping[str, Any]]) -> list[str]:
    """The columns at least one run has, in :data:`QUALITY_COLUMNS` order."""
    return [c for c in QUALITY_COLUMNS if any(c in q for q in qualities)]


def quality_cells(quality: Mapping[str, Any], columns: Sequence[str]) -> list[Any]:
    return [quality.get(c) for c in columns]
