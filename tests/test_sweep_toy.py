"""End to end: an offline grid sweep of 2 `fit` trials of the toy config, then `compare` over its folder.

The grid is the paper's schedule (sigma 20 -> 1, L = 10) against one whose largest sigma (2) is far below the
distance between the modes (14), and the sweep must rank the bad one below by its schedule-independent metric.
So that the ranking does not hang on a few steps of training, the trials run the exact score of the mixture
(``tiny_models.ExactToyScore``, a test network) through the whole CLI: the metric callback, the model's sampler
(30 Langevin steps per level, 200 samples), the runner reading the metric back, W&B offline and ``compare``. Each
trial is a real `python -m ncsn_pl fit` process. The trials also set `model.seed` and `data.seed` (both are sweep
parameters): the two seeds do not clash when Lightning merges the hyperparameters.
"""

import csv
import os
from pathlib import Path

import pytest
import yaml

from ncsn_pl.runs.reading import offline_run_dirs, read_offline_run
from ncsn_pl.tools import compare, sweep

REPO = Path(__file__).parents[1]
SIGMA_MAX = [2.0, 20.0]  # the bad schedule first: the ranking has to reorder them
METRIC = "val/sliced_wasserstein"
MONITOR = {"class_path": "ncsn_pl.training.ToySampleQuality", "init_args": {"num_samples": 200, "every_n_epochs": 1}}
EXACT_SCORE = {
    "trainer": {"max_steps": 2, "limit_val_batches": 1, "log_every_n_steps": 1, "enable_progress_bar": False,
                "enable_model_summary": False, "callbacks": [MONITOR]},
    "model": {"score_net": {"class_path": "tiny_models.ExactToyScore",
                            "init_args": {"num_scales": "${model.num_scales}"}},
              "n_steps_each": 30},
    "data": {"init_args": {"num_train": 64, "num_val": 64}},
}


@pytest.fixture(scope="module")
def toy_sweep(tmp_path_factory):
    folder = tmp_path_factory.mktemp("toy_sweep")
    file, overlay = folder / "toy2.yaml", folder / "exact_score.yaml"
    overlay.write_text(yaml.safe_dump(EXACT_SCORE))
    file.write_text(yaml.safe_dump({
        "method": "grid",
        "metric": {"name": METRIC, "goal": "minimize"},
        "program": "ncsn_pl/__main__.py",
        "parameters": {"model.sigma_max": {"values": SIGMA_MAX}, "model.seed": {"value": 1}, "data.seed": {"value": 2}},
        "command": ["${env}", "${interpreter}", "-m", "ncsn_pl", "fit", "--config",
                    str(REPO / "configs" / "toy_mixture.yaml"), "${args}"],
    }))
    out = folder / "sweep"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PYTHONPATH", os.pathsep.join([str(REPO), str(Path(__file__).parent)]))
        env.setenv("OMP_NUM_THREADS", "1")
        state = sweep.main([str(file), "--out", str(out), "--", "--config", str(overlay)])
    return out, state


def logged(run_dir: Path, metric: str = METRIC) -> list[float]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return [float(row[metric]) for row in csv.DictReader(f) if row[metric]]


def test_grid_trials_run_and_report_their_metric(toy_sweep):
    out, state = toy_sweep
    trials = state["trials"]
    assert [t["params"]["model.sigma_max"] for t in trials] == SIGMA_MAX
    assert [t["state"] for t in trials] == ["finished"] * 2, [t.get("error") for t in trials]
    for trial in trials:
        run_dir = out / trial["name"] / "version_0"
        saved = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert saved["model"]["sigma_max"] == trial["params"]["model.sigma_max"]  # the value reached the fit
        assert saved["trainer"]["max_steps"] == 2
        assert (saved["model"]["seed"], saved["data"]["init_args"]["seed"]) == (1, 2)
        assert trial["metric"]["best"] == trial["metric"]["summary"] == min(logged(run_dir))
        assert trial["metric"]["last"] == logged(run_dir)[-1]
        assert trial["run_name"] == f"data.seed=2 model.seed=1 sigma_max={trial['params']['model.sigma_max']:g}"


def test_the_sweep_ranks_the_paper_schedule_above_one_far_below_the_data_spread(toy_sweep):
    out, state = toy_sweep
    bad, paper = state["trials"]
    assert paper["metric"]["summary"] < 0.5 * bad["metric"]["summary"]
    # the paper's finding: the 0.8 / 0.2 weights are recovered by the paper's schedule, not by the bad one
    error = {t["name"]: min(logged(out / t["name"] / "version_0", "val/mode_weight_error")) for t in (bad, paper)}
    assert error[paper["name"]] < 0.06 and error[bad["name"]] > 0.15
    result = compare.main([str(out), "--no-plots"])
    assert [r.config["model.sigma_max"] for r in result.rows] == [20.0, 2.0]


def test_trials_log_offline_to_wandb_with_the_nested_config(toy_sweep):
    out, state = toy_sweep
    trial = state["trials"][0]
    (run_dir,) = offline_run_dirs(out / trial["name"])
    assert run_dir.name.endswith("-" + trial["run_id"])  # WANDB_RUN_ID set by the runner
    record = read_offline_run(run_dir)
    assert record["config"]["model"]["sigma_max"] == 2.0  # the whole resolved config, nested
    assert record["config"]["trainer"]["max_steps"] == 2
    assert "train/loss" in record["summary"] and "val/loss" in record["summary"]
    # the summary keeps the best value (define_metric summary="min"), as the sweep ranks by
    assert record["summary"][METRIC] == {"min": trial["metric"]["best"]}
    assert record["config"]["model.sigma_max"] == 2.0  # the swept values, as under wandb agent
    assert record["name"] == trial["run_name"] == "data.seed=2 model.seed=1 sigma_max=2"
    assert record["state"] == "finished"


def test_compare_over_the_sweep_folder(toy_sweep, capsys):
    out, state = toy_sweep
    result = compare.main([str(out)])  # the sweep's own metric
    assert result.metric == METRIC
    best = {t["name"]: min(logged(out / t["name"] / "version_0")) for t in state["trials"]}
    assert [r.run for r in result.rows] == sorted(best, key=best.get)
    assert [r.metric.best for r in result.rows] == sorted(best.values())
    assert result.settings == ["model.sigma_max"] and result.goal == "minimize"
    assert all(r.steps == 1 and r.loss is not None and r.quality["samples"] == 200 for r in result.rows)
    pngs = {p.name for p in (out / "compare").glob("*.png")}
    assert pngs == {"val_sliced_wasserstein_vs_model_sigma_max.png", "val_sliced_wasserstein_over_steps.png"}
    assert all((out / "compare" / p).read_bytes().startswith(b"\x89PNG") for p in pngs)
    assert (out / "compare" / "runs.csv").is_file() and (out / "compare" / "runs.md").is_file()
    assert f"2 run(s) by {METRIC}" in capsys.readouterr().out
