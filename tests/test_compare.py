"""`python -m ncsn_pl compare`: run folders, sweep folders and W&B projects into one sorted table and plots."""

import csv
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from ncsn_pl.runs.reading import read_metrics_csv
from ncsn_pl.runs.records import write_run_status
from ncsn_pl.system.locks import ProcessLock
from ncsn_pl.tools.compare import collect_runs, main
from ncsn_pl.tools.compare import wandb_runs as compare_module

PNG = b"\x89PNG\r\n\x1a\n"


def write_run(folder: Path, sigma_max: float, fid: list[float] | None, extra_columns: dict | None = None,
              status: str | None = "finished") -> Path:
    """A run folder as a fit leaves it: config.yaml, hparams.yaml, metrics.csv (fid every 10 steps) and
    run_status.json (``status``; None: a folder from before runs recorded it)."""
    folder.mkdir(parents=True)
    if status is not None:
        write_run_status(folder, status)
    config = {"model": {"sigma_max": sigma_max, "sigma_min": 0.01, "num_scales": 10},
              "trainer": {"default_root_dir": str(folder.parent), "max_steps": 30}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / "hparams.yaml").write_text("sigma_max: 1\n")
    if fid is not None:
        columns = {"val/fid": fid, "val/loss": [1.0 / (i + 1) for i in range(len(fid))], **(extra_columns or {})}
        with open(folder / "metrics.csv", "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["epoch", "step", "train/loss", *columns])
            for i in range(len(fid)):
                writer.writerow([0, 10 * i + 5, 2.0, *[""] * len(columns)])  # a training row: no val metrics
                writer.writerow([0, 10 * i + 9, "", *[values[i] for values in columns.values()]])
    return folder


def test_run_folders_sorted_by_best_fid_with_plots(tmp_path, capsys):
    root = tmp_path / "runs"
    write_run(root / "version_0", 1.0, [80.0, 40.0, 60.0], {"val/is": [2.0, 3.0, 3.5]})
    write_run(root / "version_1", 5.0, [70.0, 50.0, 45.0], {"val/is": [2.0, 2.5, 2.6]})
    write_run(root / "version_2", 20.0, [90.0, float("nan"), 30.0])
    write_run(root / "version_3", 50.0, None)  # started, never validated: listed, not dropped
    comparison = main([str(root), "--out", str(tmp_path / "out")])
    rows = comparison.rows
    assert [r.run for r in rows] == ["version_2", "version_0", "version_1", "version_3"]
    assert [r.metric.best for r in rows[:3]] == [30.0, 40.0, 45.0]
    assert [r.metric.last for r in rows[:3]] == [30.0, 60.0, 45.0]
    assert [r.metric.best_step for r in rows[:3]] == [29, 19, 29]
    assert rows[1].inception_score == 3.5 and rows[2].inception_score == 2.6 and rows[0].inception_score is None
    assert rows[0].loss == pytest.approx(1 / 3) and rows[0].steps == 29
    assert rows[3].status == "no metrics" and rows[3].metric is None
    assert comparison.settings == ["model.sigma_max"]  # the only setting that differs

    printed = capsys.readouterr().out
    assert printed.index("version_2") < printed.index("version_0") < printed.index("version_1")
    assert "no metrics" in printed

    out = tmp_path / "out"
    with open(out / "runs.csv", newline="") as file:
        table = list(csv.DictReader(file))
    assert [r["run"] for r in table] == ["version_2", "version_0", "version_1", "version_3"]
    assert [r["model.sigma_max"] for r in table] == ["20.0", "1.0", "5.0", "50.0"]
    assert float(table[0]["best val/fid"]) == 30.0 and table[3]["best val/fid"] == ""
    markdown = (out / "runs.md").read_text()
    assert markdown.count("| version_") == 4 and "| 1 | version_2 | finished | 20 | 30 |" in markdown
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["val_fid_over_steps.png", "val_fid_vs_model_sigma_max.png"]
    assert all((out / p).read_bytes().startswith(PNG) for p in pngs)


def test_higher_is_better_metrics_sort_descending(tmp_path):
    write_run(tmp_path / "a", 1.0, [50.0], {"val/is": [2.0]})
    write_run(tmp_path / "b", 2.0, [60.0], {"val/is": [4.0]})
    comparison = collect_runs([str(tmp_path)], metric="val/is")
    assert comparison.goal == "maximize" and [r.run for r in comparison.rows] == ["b", "a"]
    assert [r.run for r in collect_runs([str(tmp_path)], "val/is", goal="minimize").rows] == ["a", "b"]


def test_sweep_folder_lists_failed_trials_with_their_error(tmp_path):
    sweep = tmp_path / "sweep"
    write_run(sweep / "trial-000" / "version_0", 1.0, [40.0])
    write_run(sweep / "trial-002" / "version_0", 3.0, [20.0])
    (sweep / "trial-001").mkdir(parents=True)
    trials = [
        {"name": "trial-000", "dir": "trial-000", "state": "finished", "params": {"model.sigma_max": 1.0},
         "duration_s": 12.5},
        {"name": "trial-001", "dir": "trial-001", "state": "failed", "params": {"model.sigma_max": 2.0},
         "error": "exit code 1; see trial-001/trial.log"},
        {"name": "trial-002", "dir": "trial-002", "state": "finished", "params": {"model.sigma_max": 3.0}},
    ]
    state = {"sweep": {"metric": {"name": "val/fid", "goal": "minimize"},
                       "parameters": {"model.sigma_max": {"values": [1.0, 2.0, 3.0]}}}, "trials": trials}
    (sweep / "sweep.json").write_text(json.dumps(state))
    comparison = collect_runs([str(sweep)])
    assert [(r.run, r.status) for r in comparison.rows] == [
        ("trial-002", "finished"), ("trial-000", "finished"), ("trial-001", "failed")]
    assert comparison.rows[2].note == "exit code 1; see trial-001/trial.log"
    assert comparison.rows[1].runtime_s == 12.5
    assert comparison.settings == ["model.sigma_max"]
    assert [r.config["model.sigma_max"] for r in comparison.rows] == [3.0, 1.0, 2.0]


def test_a_sweep_folder_is_compared_by_its_own_metric_with_auto_values_and_sample_counts(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    for i, (resolved, losses) in enumerate([(4.74, [0.9, 0.5]), (1.0, [0.7, 0.8])]):  # sigma_max auto, 1
        run = write_run(sweep / f"trial-00{i}" / "version_0", resolved, [60.0 - 10 * i, 50.0 - 10 * i],
                        {"val/loss": losses})
        lines = [{"epoch": 0, "step": 9, "fid": 60.0, "num_samples": 300},
                 {"epoch": 1, "step": 19, "fid": 50.0, "num_samples": 1000}]
        (run / "sample_quality.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    trials = [{"name": f"trial-00{i}", "dir": f"trial-00{i}", "state": "finished",
               "params": {"model.sigma_max": v, "model.sigma_min": 0.01}} for i, v in enumerate(["auto", 1.0])]
    (sweep / "sweep.json").write_text(json.dumps({
        "sweep": {"metric": {"name": "val/loss", "goal": "minimize"},
                  "parameters": {"model.sigma_max": {"values": ["auto", 1.0]}, "model.sigma_min": {"value": 0.01}}},
        "trials": trials}))
    comparison = main([str(sweep), "--out", str(tmp_path / "out")])
    assert comparison.metric == "val/loss" and comparison.goal == "minimize"  # not val/fid
    assert [(r.run, r.metric.best, r.metric.last) for r in comparison.rows] == [
        ("trial-000", 0.5, 0.5), ("trial-001", 0.7, 0.8)]
    assert comparison.settings == ["model.sigma_max"]  # sigma_min is a constant of the sweep
    auto, fixed = comparison.rows
    assert auto.config["model.sigma_max"] == "auto" and auto.resolved == {"model.sigma_max": 4.74}
    assert auto.setting("model.sigma_max") == 4.74 and fixed.resolved == {}
    printed = capsys.readouterr().out
    assert "auto (4.74)" in printed
    with open(tmp_path / "out" / "runs.csv", newline="") as file:
        table = list(csv.DictReader(file))
    assert table[0]["model.sigma_max"] == "auto (4.74)" and table[1]["model.sigma_max"] == "1.0"
    assert "samples" not in table[0]  # val/loss is no metric of samples
    by_fid = collect_runs([str(sweep)], metric="val/fid")
    # the samples behind each best FID: the record at the best step
    assert [(r.run, r.metric.best, r.quality["samples"]) for r in by_fid.rows] == [("trial-001", 40.0, 1000),
                                                                          ("trial-000", 50.0, 1000)]
    assert (tmp_path / "out" / "val_loss_vs_model_sigma_max.png").read_bytes().startswith(PNG)


def test_no_runs_says_so(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "empty")])
    assert exit_info.value.code == 2  # a mistake in the input, as argparse's
    assert "no runs found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "missing" / "folder")])
    assert exit_info.value.code == 2
    assert "neither a folder nor entity/project" in capsys.readouterr().err


class FakeRun(SimpleNamespace):
    def scan_history(self, keys):
        return [row for row in self.rows if all(k in row for k in keys)]


def test_entity_project_through_the_wandb_api(monkeypatch, tmp_path):
    # a stub of wandb.Api().runs(path): two runs of a sweep over sigma_max (one "auto") with define_metric summaries
    sweep = SimpleNamespace(config={"metric": {"name": "val/fid", "goal": "minimize"},
                                    "parameters": {"model.sigma_max": {"values": ["auto", 2.0]}}})
    runs = [
        FakeRun(name="sigma_max=auto", id="r1", state="finished", sweep=sweep,
                config={"model": {"sigma_max": 4.74}, "model.sigma_max": "auto", "_wandb": {}},
                summary={"_runtime": 100.0, "trainer/global_step": 20, "val/is": {"max": 3.0},
                         "val/loss": {"min": 0.5}, "val/fid": {"min": 45.0}},
                rows=[{"val/fid": 50.0, "trainer/global_step": 10}, {"val/fid": 45.0, "trainer/global_step": 20}]),
        FakeRun(name="sigma_max=2", id="r2", state="finished", sweep=sweep,
                config={"model": {"sigma_max": 2.0}, "model.sigma_max": 2.0},
                summary={"_runtime": 90.0, "trainer/global_step": 20},
                rows=[{"val/fid": 30.0, "trainer/global_step": 10}, {"val/fid": 35.0, "trainer/global_step": 20}]),
    ]
    seen = []
    monkeypatch.setattr(compare_module, "wandb_api",
                        lambda: SimpleNamespace(runs=lambda path: seen.append(path) or runs))
    comparison = main(["me/ncsn-pl", "--out", str(tmp_path)])
    assert seen == ["me/ncsn-pl"]  # read once
    assert comparison.metric == "val/fid"  # the sweep's metric
    assert [(r.run, r.metric.best, r.metric.last) for r in comparison.rows] == [
        ("sigma_max=2", 30.0, 35.0), ("sigma_max=auto", 45.0, 45.0)]
    auto = comparison.rows[1]
    assert auto.inception_score == 3.0 and auto.loss == 0.5 and auto.runtime_s == 100.0
    assert auto.config["model.sigma_max"] == "auto" and auto.resolved == {"model.sigma_max": 4.74}
    assert comparison.settings == ["model.sigma_max"] and (tmp_path / "runs.csv").is_file()

    def offline():
        raise ConnectionError("no network")

    monkeypatch.setattr(compare_module, "wandb_api", offline)
    with pytest.raises(SystemExit) as exit_info:
        main(["me/ncsn-pl", "--out", str(tmp_path)])
    assert exit_info.value.code == 2


def test_compare_ranks_a_sweep_as_the_sweep_runner_does(tmp_path):
    import os

    from ncsn_pl.tools.sweep.runner import Sweep

    # val/custom declares no summary, so W&B keeps the last value; a failed and a running trial logged better values
    config = {"method": "grid", "metric": {"name": "val/custom", "goal": "minimize"},
              "parameters": {"x": {"values": [1.0, 2.0, 3.0, 4.0]}},
              "command": ["${env}", "${interpreter}", "trial.py", "${args}"], "program": "trial.py"}  # fmt: skip
    sweep = Sweep(config, tmp_path / "sweep", stream=open(os.devnull, "w"))
    outcomes = [([5.0, 1.0, 3.0], [50.0, 10.0, 60.0], 0), ([4.0, 2.0, 2.0], [40.0, 30.0, 30.0], 0), ([0.5], [1.0], 1),
                ([0.1], [1.0], None)]  # None: still running
    for custom, fid, returncode in outcomes:
        trial = sweep.claim(4)
        write_run(sweep.out / trial["name"] / "version_0", trial["params"]["x"], fid, {"val/custom": custom})
        trial["log"] = f"{trial['name']}/trial.log"
        (sweep.out / trial["log"]).write_text("")
        if returncode is not None:
            sweep._finish(trial, returncode, 1.0)
    runner = [t["name"] for t in sweep.ranked()]
    assert runner == ["trial-001", "trial-000"]  # by the last value (2 < 3), not the best (1 < 2)

    rows = collect_runs([str(sweep.out)]).rows
    assert [r.run for r in rows] == [*runner, "trial-002", "trial-003"]  # the others listed, not ranked
    assert [r.rank for r in rows] == [1, 2, None, None]
    assert [r.status for r in rows] == ["finished", "finished", "failed", "running"]
    # a metric with a declared summary (val/fid: min) is ranked by its best value
    assert [r.run for r in collect_runs([str(sweep.out)], metric="val/fid").rows][:2] == ["trial-000", "trial-001"]


def test_plots_with_nothing_to_show_are_skipped(tmp_path):
    # a sweep of `fid` trials: one number per run, so no curve over steps; a setting plot needs two values
    write_run(tmp_path / "runs" / "a", 1.0, [50.0])
    write_run(tmp_path / "runs" / "b", 5.0, [40.0])
    comparison = main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    assert [p.name for p in comparison.files if p.suffix == ".png"] == ["val_fid_vs_model_sigma_max.png"]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["val_fid_vs_model_sigma_max.png"]
    write_run(tmp_path / "one" / "a", 1.0, [50.0])
    alone = main([str(tmp_path / "one"), "--out", str(tmp_path / "out_one")])
    assert not list((tmp_path / "out_one").glob("*.png")) and all(p.suffix != ".png" for p in alone.files)


# ------------------------------------------------------------------ how each run ended, from what it recorded
def test_only_runs_that_recorded_a_clean_end_are_ranked(tmp_path):
    root = tmp_path / "runs"
    write_run(root / "finished", 1.0, [60.0, 50.0, 40.0])
    write_run(root / "killed", 2.0, [30.0, 20.0], status="running")  # died at step 19: no end recorded, no lock
    write_run(root / "live", 3.0, [10.0], status="running")
    lock = ProcessLock(root / "live" / ".run.lock")  # a live process holds its folder, as a running fit does
    try:
        comparison = collect_runs([str(root)])
    finally:
        lock.release()
    rows = {row.run: row for row in comparison.rows}
    assert [row.run for row in comparison.rows] == ["finished", "killed", "live"]
    assert [row.rank for row in comparison.rows] == [1, None, None]  # the better FIDs of the others do not rank
    assert (rows["finished"].status, rows["killed"].status, rows["live"].status) == ("finished", "killed", "running")
    assert rows["killed"].steps == 19 and "SIGKILL" in rows["killed"].note
    assert f"pid {os.getpid()}" in rows["live"].note
    # the lock is gone with its process: the same folder now reads as killed
    assert {r.run: r.status for r in collect_runs([str(root)]).rows}["live"] == "killed"


def test_interrupted_and_failed_runs_say_why(tmp_path, capsys):
    write_run(tmp_path / "preempted", 1.0, [20.0])
    write_run_status(tmp_path / "preempted", "interrupted", "SIGTERM (preempted)")
    write_run(tmp_path / "crashed", 2.0, [10.0])
    write_run_status(tmp_path / "crashed", "failed", "RuntimeError: CUDA out of memory")
    write_run(tmp_path / "done", 3.0, [30.0])
    comparison = main([str(tmp_path), "--out", str(tmp_path / "out")])
    assert [(r.run, r.status, r.rank) for r in comparison.rows] == [
        ("done", "finished", 1), ("crashed", "failed", None), ("preempted", "interrupted", None)]
    printed = capsys.readouterr().out
    assert "crashed: RuntimeError: CUDA out of memory" in printed and "preempted: SIGTERM (preempted)" in printed


def test_a_cut_last_row_of_metrics_csv_is_left_out_and_said(tmp_path, capsys):
    run = write_run(tmp_path / "runs" / "cut", 1.0, [3.0, 2.0])  # val/loss 1, 1/2 at steps 9, 19
    with open(run / "metrics.csv", "a") as file:
        file.write("0,299,1")  # the run was killed while writing the row of step 299
    write_run_status(run, "running")
    write_run(tmp_path / "runs" / "whole", 2.0, [5.0, 4.0])
    assert read_metrics_csv(run / "metrics.csv")["train/loss"] == [(5, 2.0), (15, 2.0)]  # not (299, 1.0)
    comparison = main([str(tmp_path / "runs"), "--metric", "train/loss", "--out", str(tmp_path / "out")])
    cut = {row.run: row for row in comparison.rows}["cut"]
    assert cut.steps == 19 and cut.metric.last == 2.0 and cut.loss == 0.5
    assert cut.status == "killed" and cut.rank is None
    assert "the last row of metrics.csv was cut short ('0,299,1'" in cut.note
    assert "'0,299,1'" in capsys.readouterr().out
    # a row cut inside its cells (line break written, cells missing) is left out too
    (run / "metrics.csv").write_text("epoch,step,train/loss,val/fid\n0,5,2.0,\n0,9,,7.0\n0,19\n")
    assert read_metrics_csv(run / "metrics.csv") == {"train/loss": [(5, 2.0)], "val/fid": [(9, 7.0)]}


def test_folders_that_recorded_no_end_are_unknown_unless_their_sweep_says(tmp_path):
    write_run(tmp_path / "old" / "version_0", 1.0, [40.0], status=None)
    (row,) = collect_runs([str(tmp_path / "old")]).rows
    assert (row.status, row.rank) == ("unknown", None) and "run_status.json" in row.note
    sweep = tmp_path / "sweep"
    write_run(sweep / "trial-000" / "version_0", 1.0, [40.0], status=None)
    trials = [{"name": "trial-000", "dir": "trial-000", "state": "finished", "params": {"model.sigma_max": 1.0}}]
    (sweep / "sweep.json").write_text(json.dumps({"sweep": {"parameters": {}}, "trials": trials}))
    (row,) = collect_runs([str(sweep)]).rows
    assert (row.status, row.rank) == ("finished", 1)  # the sweep runner recorded the trial's end
