"""Every shipped sweep file runs one trial at smoke size and reports the metric it optimises.

Each file runs as `python -m ncsn_pl sweep FILE --count 1 -- OVERLAY` from the repository root (the files name
their configs relative to it), with a smoke-size overlay after `--`: a few steps of a narrow network and a cheap
version of the file's metric callback (FID with a tiny feature extractor, the toy metric with 50 samples). One
toy and one digits file run by default; the others, and the MNIST / CIFAR-10 ones on fake data, are `slow`.
"""

import json
import math
import os
from pathlib import Path

import pytest
import yaml
from fake_datasets import write_fake_cifar10, write_fake_mnist

from ncsn_pl.tools.sweep import main

REPO = Path(__file__).parents[1]
TESTS = Path(__file__).parent
# the sweeps that train (the sampler sweep on a checkpoint runs `fid`: tests/test_sweep_sampler.py)
SWEEP_FILES = [*sorted((REPO / "experiments" / "sweeps").glob("*.yaml")), REPO / "experiments/sigma_study/sweep.yaml",
               REPO / "experiments/fashion/sigma_sweep.yaml"]
FILES = [p for p in SWEEP_FILES if "fit" in yaml.safe_load(p.read_text())["command"]]
FAST = {"toy_grid.yaml", "digits_grid.yaml"}
RUN = {"max_steps": 2, "max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1, "log_every_n_steps": 1,
       "enable_progress_bar": False, "enable_model_summary": False, "accelerator": "cpu", "devices": 1}
# makes torchvision accept the fake CIFAR-10 (its md5 sums differ from the real files) in the trials' processes
ACCEPT_FAKE_CIFAR = """
from unittest import mock
from torchvision.datasets import CIFAR10
mock.patch.object(CIFAR10, "_check_integrity", return_value=True).start()
mock.patch("torchvision.datasets.cifar.check_integrity", return_value=True).start()
"""


def smoke_overlay(folder: Path, toy: bool) -> Path:
    """The overlay after `--`: the run settings and a cheap metric callback (tiny FID, or 50 toy samples), whose
    samples take one Langevin step per level whatever the file sweeps (``sampler`` overrides the model's)."""
    one_step = {"class_path": "ncsn_pl.core.samplers.AnnealedLangevin",
                "init_args": {"n_steps_each": 1, "step_lr": 0.1 if toy else 2e-5}}  # the configs' step_lr
    if toy:
        monitor = {"class_path": "ncsn_pl.training.ToySampleQuality",
                   "init_args": {"num_samples": 50, "every_n_epochs": 1, "sampler": one_step}}
        overlay = {"trainer": {**RUN, "callbacks": [monitor]}, "model": {"n_steps_each": 1},
                   "data": {"init_args": {"num_train": 64, "num_val": 64}}}
    else:
        quality = {"feature_extractor": {"class_path": "tiny_models.TinyFeatures"}, "cache_dir": str(folder / "stats")}
        monitor = {"class_path": "ncsn_pl.training.SampleQualityMonitor",
                   "init_args": {"num_samples": 8, "num_real": 30, "batch_size": 8, "progress_bar": False,
                                 "quality": quality, "sampler": one_step}}
        overlay = {"trainer": {**RUN, "callbacks": [monitor], "val_check_interval": None,
                               "check_val_every_n_epoch": 1},
                   "model": {"score_net": {"init_args": {"ngf": 8}}, "n_steps_each": 1},
                   "data": {"init_args": {"batch_size": 4, "num_workers": 0}},
                   "checkpoint": {"every_n_train_steps": None}}
    path = folder / ("toy_smoke.yaml" if toy else "image_smoke.yaml")
    path.write_text(yaml.safe_dump(overlay))
    return path


@pytest.mark.parametrize(
    "path", [pytest.param(p, id=p.name, marks=() if p.name in FAST else pytest.mark.slow) for p in FILES])
def test_a_shipped_sweep_file_runs_a_smoke_trial_that_reports_its_metric(path, tmp_path, monkeypatch):
    sweep = yaml.safe_load(path.read_text())
    config = sweep["command"][sweep["command"].index("--config") + 1]
    toy = "toy" in Path(config).name
    extra = ["--config", str(smoke_overlay(tmp_path, toy))]
    pythonpath = [str(REPO), str(TESTS)]
    if "mnist" in config or "cifar10" in config:
        write_fake_mnist(tmp_path / "data")
        write_fake_cifar10(tmp_path / "data")
        extra.append(f"--data.init_args.root={tmp_path / 'data'}")
        (tmp_path / "accept_fake").mkdir()
        (tmp_path / "accept_fake" / "sitecustomize.py").write_text(ACCEPT_FAKE_CIFAR)
        pythonpath.append(str(tmp_path / "accept_fake"))
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(pythonpath))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # small tensors: threads only stall when the cores are shared
    out = tmp_path / "sweep"
    state = main([str(path), "--out", str(out), "--count", "1", "--wandb-mode", "disabled", "--", *extra])
    (trial,) = state["trials"]
    log = (out / trial["log"]).read_text()[-3000:]
    assert trial["state"] == "finished", (trial["error"], log)
    metric = trial["metric"]
    assert metric["name"] == sweep["metric"]["name"] and math.isfinite(metric["best"]), log
    assert trial["metric_source"] == "version_0/metrics.csv"
    saved = yaml.safe_load((out / trial["name"] / "version_0" / "config.yaml").read_text())
    for key, value in trial["params"].items():  # the swept values reached the run ("auto" as the number it gave)
        group, name = key.split(".", 1)
        assert saved[group][name] == value or (value == "auto" and isinstance(saved[group][name], (int, float))), key
    records = [json.loads(line) for line in (out / trial["name"] / "version_0" / "sample_quality.jsonl").open()]
    assert records and all(r["num_samples"] in (8, 50) for r in records)
