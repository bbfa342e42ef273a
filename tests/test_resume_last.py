"""``fit --ckpt_path last``: the same command starts a run and, run again (a requeued job), continues it in its own
folder; the newest ``last.ckpt`` of the root is the one written last, not the one with most steps."""

import csv
import os
from pathlib import Path

import pytest
import torch
from cli_runs import fit_digits

from ncsn_pl.commands.cli import main


def step_of(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["global_step"]


def logged_steps(run: Path) -> list[int]:
    with (run / "metrics.csv").open() as file:
        return [int(row["step"]) for row in csv.DictReader(file) if row.get("train/loss")]


def test_the_same_command_starts_a_run_then_continues_it(tmp_path, caplog):
    fit_digits(tmp_path, "--trainer.max_epochs=1", "--ckpt_path=last")  # nothing there yet: a new run
    assert f"no last.ckpt in {tmp_path}/version_*/checkpoints/ yet; starting a new run." in caplog.text
    last = tmp_path / "version_0" / "checkpoints" / "last.ckpt"
    assert step_of(last) == 2

    caplog.clear()
    fit_digits(tmp_path, "--trainer.max_epochs=2", "--ckpt_path=last")  # the requeued job: the same command
    assert f"--ckpt_path last: continuing from {last}" in caplog.text
    assert sorted(p.name for p in tmp_path.glob("version_*")) == ["version_0"]  # its own folder, no new one
    assert step_of(last) == 4
    assert logged_steps(tmp_path / "version_0") == [0, 1, 2, 3]  # one metrics.csv, each step once


def test_last_is_the_checkpoint_written_last_not_the_one_with_most_steps(tmp_path):
    fit_digits(tmp_path, "--trainer.max_epochs=2")  # version_0: 4 steps
    older = tmp_path / "version_0" / "checkpoints" / "last.ckpt"
    os.utime(older, (1e9, 1e9))  # written long ago
    fit_digits(tmp_path, "--trainer.max_epochs=1")  # version_1: 2 steps, written now (a preempted job)
    newer = tmp_path / "version_1" / "checkpoints" / "last.ckpt"
    fit_digits(tmp_path, "--trainer.max_epochs=2", "--ckpt_path=last")
    assert step_of(newer) == 4 and logged_steps(tmp_path / "version_1") == [0, 1, 2, 3]
    assert step_of(older) == 4 and older.stat().st_mtime == 1e9  # untouched
    assert sorted(p.name for p in tmp_path.glob("version_*")) == ["version_0", "version_1"]


def test_validate_with_last_and_no_checkpoint_says_where_it_looked(tmp_path):
    config = Path(__file__).parents[1] / "configs" / "quickstart.yaml"
    with pytest.raises(FileNotFoundError, match=rf"--ckpt_path last: no last.ckpt in {tmp_path}/version_\*/checkpo"):
        main(["validate", "--config", str(config), f"--trainer.default_root_dir={tmp_path}", "--ckpt_path=last"])
    assert list(tmp_path.iterdir()) == []
