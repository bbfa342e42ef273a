"""A run's records after a resume or a kill: sample_quality.jsonl keeps each step once, metrics.csv is never
truncated when its header grows."""

import csv
import json

import pytest

from ncsn_pl.runs.step_records import append_step_record, trim_step_records
from ncsn_pl.training import RunLogger


def records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_records(path, steps) -> None:
    path.write_text("".join(json.dumps({"step": s, "fid": 100.0 - s}) + "\n" for s in steps))


def test_trim_drops_the_records_after_the_step_and_leaves_a_file_without_them_alone(tmp_path):
    path = tmp_path / "sample_quality.jsonl"
    write_records(path, [10, 20, 30, 40])
    assert trim_step_records(path, 20) == 2
    assert [r["step"] for r in records(path)] == [10, 20]
    before = path.stat().st_mtime_ns
    assert trim_step_records(path, 20) == 0 and path.stat().st_mtime_ns == before
    assert trim_step_records(tmp_path / "none.jsonl", 5) == 0 and not (tmp_path / "none.jsonl").exists()


def test_append_drops_records_of_later_steps_and_keeps_the_rest_in_order(tmp_path):
    path = tmp_path / "sample_quality.jsonl"
    append_step_record(path, {"step": 10, "fid": 1.0})  # a new file
    write_records(path, [10, 20, 30])
    append_step_record(path, {"step": 20, "fid": 5.0})
    assert [(r["step"], r["fid"]) for r in records(path)] == [(10, 90.0), (20, 80.0), (20, 5.0)]
    assert not list(tmp_path.glob("*.tmp"))


def test_a_resumed_run_keeps_sample_quality_records_up_to_the_checkpoint_step(tmp_path):
    run = tmp_path / "version_0"
    run.mkdir()
    write_records(run / "sample_quality.jsonl", [2, 4, 6, 8])
    (run / "metrics.csv").write_text("step,val/fid\n2,98\n4,96\n6,94\n8,92\n")
    logger = RunLogger(str(tmp_path), version=0, resume_step=4)
    logger.log_metrics({"val/fid": 1.0}, step=6)
    logger.finalize("success")
    assert [r["step"] for r in records(run / "sample_quality.jsonl")] == [2, 4]
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [(r["step"], r["val/fid"]) for r in rows] == [("2", "98"), ("4", "96"), ("6", "1.0")]


def _log_losses(logger: RunLogger) -> None:
    for step in range(3):
        logger.log_metrics({"train/loss": float(step)}, step=step)
    logger.save()
    logger.log_metrics({"val/loss": 1.0}, step=3)  # a new column: the file is rewritten with the wider header


def test_a_kill_while_metrics_csv_grows_its_header_leaves_the_file_whole(tmp_path, monkeypatch):
    def killed(self, rows):
        raise KeyboardInterrupt("killed")

    logger = RunLogger(str(tmp_path))
    _log_losses(logger)
    path = tmp_path / "version_0" / "metrics.csv"
    before = path.read_text()
    assert before.count("\n") == 4
    monkeypatch.setattr(csv.DictWriter, "writerows", killed)
    with pytest.raises(KeyboardInterrupt):
        logger.save()
    assert path.read_text() == before and not list(path.parent.glob("*.tmp"))


def test_metrics_csv_rewritten_with_a_wider_header_keeps_every_row(tmp_path):
    logger = RunLogger(str(tmp_path))
    _log_losses(logger)
    logger.save()
    rows = list(csv.DictReader((tmp_path / "version_0" / "metrics.csv").open()))
    assert [(r["step"], r["train/loss"], r["val/loss"]) for r in rows] == [
        ("0", "0.0", ""), ("1", "1.0", ""), ("2", "2.0", ""), ("3", "", "1.0")
    ]
