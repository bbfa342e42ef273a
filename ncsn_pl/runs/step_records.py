"""A run's JSON-lines records, one object per evaluation with its ``"step"`` (``sample_quality.jsonl``), kept in step
order and written whole or not at all, so that a resumed run never leaves a step recorded twice."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ncsn_pl.system.files import atomic_write_text

__all__ = ["SAMPLE_QUALITY_RECORDS", "append_step_record", "trim_step_records"]

SAMPLE_QUALITY_RECORDS = "sample_quality.jsonl"


def _read(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def _step(line: str) -> int | None:
    try:
        step = json.loads(line).get("step")
    except (ValueError, AttributeError):
        return None  # not a record of ours: kept as it is
    return int(step) if isinstance(step, (int, float)) else None


def trim_step_records(path: str | os.PathLike[str], last_step: int) -> int:
    """Drop the records of ``path`` after ``last_step`` (a run resumed from that step records them again); returns
    how many were dropped. The file is rewritten through a staged copy, only when something is dropped."""
    path = Path(path)
    lines = _read(path)
    kept = [line for line in lines if (_step(line) or 0) <= last_step]
    if len(kept) < len(lines):
        atomic_write_text("".join(line + "\n" for line in kept), path)
    return len(lines) - len(kept)


def append_step_record(path: str | os.PathLike[str], record: Mapping[str, Any]) -> Path:
    """Add ``record`` (with its ``"step"``) to ``path``, dropping records of later steps (left by a run this one
    continues from an earlier checkpoint); written through a staged copy."""
    path = Path(path)
    kept = [line for line in _read(path) if (_step(line) or 0) <= int(record["step"])]
    return atomic_write_text("".join(line + "\n" for line in [*kept, json.dumps(record)]), path)
