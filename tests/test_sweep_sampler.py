"""A sweep of sampler settings on one trained checkpoint (`experiments/sweeps/digits_sampler.yaml`): each trial runs
`fid` on the checkpoint, trains nothing, and reports `fid` from its own `fid.json` (and its W&B run).

The shipped file runs unchanged but for a smoke overlay after `--` (8 samples, a tiny feature extractor) on a
checkpoint trained for two steps; `NCSN_CKPT` names it, as the file's comments tell a user to do.
"""

import json
import math
import os
from pathlib import Path

import pytest
import yaml

from ncsn_pl.commands.cli import main as cli_main
from ncsn_pl.runs.reading import offline_run_dirs, read_offline_run
from ncsn_pl.runs.records import sweep_run_name
from ncsn_pl.tools.compare import collect_runs
from ncsn_pl.tools.sweep import main
from ncsn_pl.tools.sweep.spec import SweepFileError, load_sweep_file, validate_sweep

REPO = Path(__file__).parents[1]
TESTS = Path(__file__).parent
SWEEP_FILE = REPO / "experiments" / "sweeps" / "digits_sampler.yaml"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """``last.ckpt`` of a 2-step NCSN run on the digits (quickstart + cpu_smoke)."""
    root = tmp_path_factory.mktemp("fit")
    cli_main(["fit", "--config", str(REPO / "configs" / "quickstart.yaml"), "--config",
              str(REPO / "configs" / "cpu_smoke.yaml"), f"--trainer.default_root_dir={root}",
              f"--trainer.logger.init_args.save_dir={root}", "--trainer.limit_val_batches=0.0"])  # fmt: skip
    (path,) = root.rglob("last.ckpt")
    return path


@pytest.fixture
def trial_env(checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("NCSN_CKPT", str(checkpoint))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), str(TESTS)]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return ["--num_samples=8", "--batch_size=8", "--quality.feature_extractor=tiny_models.TinyFeatures",
            "--num_real=30", f"--quality.cache_dir={tmp_path / 'stats'}"]  # fmt: skip


def test_the_sampler_sweep_scores_one_checkpoint_per_trial_without_training(trial_env, checkpoint, tmp_path):
    out = tmp_path / "sweep"
    state = main([str(SWEEP_FILE), "--out", str(out), "--count", "2", "--wandb-mode", "offline", "--", *trial_env])
    assert [t["state"] for t in state["trials"]] == ["finished", "finished"], [t.get("error") for t in state["trials"]]
    for trial in state["trials"]:
        folder = out / trial["name"]
        record = json.loads((folder / "fid.json").read_text())
        assert trial["metric_source"] == "fid.json" and trial["metric"]["name"] == "fid"
        assert trial["metric"]["best"] == pytest.approx(record["fid"]) and math.isfinite(record["fid"])
        # the swept values reached the sampler; the samples behind the number are recorded with it
        settings = record["sampler"]["init_args"]
        assert settings["step_lr"] == trial["params"]["sampler.init_args.step_lr"]
        assert settings["n_steps_each"] == trial["params"]["sampler.init_args.n_steps_each"]
        assert record["sampler"]["nfe"] == 10 * settings["n_steps_each"]  # quickstart: L = 10, no denoising step
        assert record["num_samples"] == 8 and record["source"]["checkpoint"] == str(checkpoint)
        assert (folder / "fid_samples" / "sample.json").is_file()  # resumable samples in the trial's folder
        assert not list(folder.rglob("*.ckpt")) and not list(folder.rglob("metrics.csv"))  # nothing trained
        # the trial's W&B run holds the number under the sweep's metric, named after the swept values
        (run_dir,) = offline_run_dirs(folder)
        run = read_offline_run(run_dir)
        assert (
            run["summary"]["fid"] == pytest.approx(record["fid"]) and run["summary"]["nfe"] == record["sampler"]["nfe"]
        )
        assert run["name"] == sweep_run_name(trial["params"])
    assert state["trials"][0]["params"] != state["trials"][1]["params"]

    comparison = collect_runs([str(out)])  # by the sweep's metric, with what each FID was computed from
    assert comparison.metric == "fid" and comparison.goal == "minimize"
    assert sorted(r.metric.best for r in comparison.rows) == [r.metric.best for r in comparison.rows]
    assert all(r.quality["samples"] == 8 and r.quality["NFE"] in (50, 200, 1000) for r in comparison.rows)
    assert set(comparison.settings) == {"sampler.init_args.n_steps_each", "sampler.init_args.step_lr"}


def test_a_sampler_sweep_that_cannot_report_its_metric_fails_before_any_trial(trial_env, monkeypatch):
    sweep = load_sweep_file(SWEEP_FILE)
    validate_sweep(sweep, extra_args=trial_env, probe_values=False)  # the shipped file is valid
    wrong = {**sweep, "metric": {"name": "val/fid", "goal": "minimize"}}
    with pytest.raises(SweepFileError, match=r"'val/fid' is never reported by `fid.*optimise one of fid"):
        validate_sweep(wrong, extra_args=trial_env, probe_values=False)
    kid = {**sweep, "metric": {"name": "kid", "goal": "minimize"}}
    with pytest.raises(SweepFileError, match=r"--quality.kid=true"):
        validate_sweep(kid, extra_args=trial_env, probe_values=False)
    validate_sweep(kid, extra_args=[*trial_env, "--quality.kid=true"], probe_values=False)
    with pytest.raises(SweepFileError, match=r"sets --out: leave it out"):
        validate_sweep(sweep, extra_args=[*trial_env, "--out=/tmp/one.json"], probe_values=False)
    with pytest.raises(SweepFileError, match=r"goal 'maximize'"):
        validate_sweep({**sweep, "metric": {"name": "fid", "goal": "maximize"}}, extra_args=trial_env,
                       probe_values=False)  # fmt: skip
    monkeypatch.delenv("NCSN_CKPT")
    with pytest.raises(SweepFileError, match=r"NCSN_CKPT is not set: export it"):
        validate_sweep(sweep, extra_args=trial_env, probe_values=False)


def test_the_shipped_sampler_sweep_file_says_how_to_run_it():
    text = SWEEP_FILE.read_text()
    sweep = yaml.safe_load(text)
    assert "export NCSN_CKPT=" in text and sweep["program"] and sweep["command"][4] == "fid"
    assert all(name.startswith("sampler.") for name in sweep["parameters"])
