"""Settings given to ``sample`` and ``fid`` on top of a checkpoint: ``--model.*`` sampler settings apply to the
checkpoint's model, schedule changes are refused in one line; ``fid --wandb`` puts a result into W&B."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import wandb
from cli_runs import smoke_checkpoint
from lightning.pytorch.loggers import CSVLogger, WandbLogger

from ncsn_pl.commands.arguments import _switches_on
from ncsn_pl.commands.cli import main
from ncsn_pl.runs.reading import offline_run_dirs, read_offline_run
from ncsn_pl.runs.wandb_glue import wandb_run_of

REPO = Path(__file__).parents[1]
TESTS = Path(__file__).parent
CONFIGS = REPO / "configs"
CPU = ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.enable_progress_bar=false"]
TINY = ["--quality.feature_extractor=tiny_models.TinyFeatures", "--num_real=30"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """``last.ckpt`` of a 2-step NCSN run on the digits (quickstart + cpu_smoke: n_steps_each 1), step_lr 1e-5."""
    return smoke_checkpoint(tmp_path_factory.mktemp("fit"), "--model.step_lr=1e-5")


def sample(checkpoint: Path, out: Path, *extra: str) -> dict:
    main(["sample", "--ckpt_path", str(checkpoint), "--num_samples=1", f"--out_dir={out}", "--save_png=false",
          *CPU, *extra])  # fmt: skip
    return json.loads((out / "sample.json").read_text())


def test_model_sampler_settings_on_sample_apply_to_the_checkpoint_s_model(checkpoint, tmp_path):
    record = sample(checkpoint, tmp_path / "two", "--model.n_steps_each", "2")
    assert record["sampler"]["init_args"] == {"n_steps_each": 2, "step_lr": 1e-5, "denoise": False}
    assert record["nfe"] == 20  # L = 10 levels x 2 steps
    # a value equal to ScoreModel's default (2e-5) still replaces the checkpoint's
    record = sample(checkpoint, tmp_path / "default", "--model.step_lr=2e-5")
    assert record["sampler"]["init_args"] == {"n_steps_each": 1, "step_lr": 2e-5, "denoise": False}


def test_a_schedule_setting_on_sample_is_refused_in_one_line_that_says_what_to_use(checkpoint, tmp_path):
    with pytest.raises(ValueError, match=r"^sample draws with the checkpoint's schedule and network, so "
                                         r"--model.sigma_max cannot change; leave it out\. .*--sampler") as error:
        sample(checkpoint, tmp_path, "--model.sigma_max=3")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "sample.json").exists()


LOG_RESULTS = """
import sys
from ncsn_pl.runs.wandb_glue import log_fid_result

result = {"fid": 12.5, "noisy_share": 0.125, "kid": 0.25, "num_samples": 8, "sampler": {"nfe": 10},
          "source": {"checkpoint": "x.ckpt"}}
print(log_fid_result(result, sys.argv[1], project="evals", name="paper-scale"))
adaptive = {"nfe": 45.5, "nfe_max": 51}  # an adaptive sampler's mean and largest
print(log_fid_result({**result, "fid": 11.0, "sampler": adaptive}, sys.argv[1], run_id="train123", step=2))
"""


def test_fid_results_logged_offline_make_a_new_run_or_join_the_given_one(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_MODE="offline", PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", LOG_RESULTS, str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    new_id, joined_id = done.stdout.split()[-2:]
    # the two runs start within a second or two: tell them apart by id, not by the order of their folders
    runs = {p.name.rsplit("-", 1)[-1]: p for p in offline_run_dirs(tmp_path)}
    assert set(runs) == {new_id, joined_id}
    new, joined = read_offline_run(runs[new_id]), read_offline_run(runs[joined_id])
    assert new["name"] == "paper-scale" and new["run_id"] == new_id != "train123"
    assert new["summary"]["fid"] == 12.5 and new["summary"]["nfe"] == 10 and new["summary"]["kid"] == 0.25
    assert new["summary"]["noisy_share"] == 0.125
    assert new["config"]["fid"]["source"] == {"checkpoint": "x.ckpt"}
    assert joined["run_id"] == joined_id == "train123"
    assert joined["summary"]["fid"] == 11.0 and joined["summary"]["trainer/global_step"] == 2
    assert joined["summary"]["nfe"] == 45.5 and joined["summary"]["nfe_max"] == 51


def test_a_checkpoint_names_its_wandb_run_unless_w_and_b_is_disabled(tmp_path, monkeypatch):
    logger = WandbLogger(project="ncsn-pl", id="abc123", save_dir=str(tmp_path))
    assert wandb_run_of([CSVLogger(str(tmp_path)), logger]) == {"id": "abc123", "project": "ncsn-pl",
                                                                "save_dir": str(tmp_path)}  # fmt: skip
    # what WANDB_MODE=disabled gives once the logger's run has started
    monkeypatch.setattr(wandb, "run", SimpleNamespace(disabled=True, id="abc123"))
    assert wandb_run_of([logger]) is None and wandb_run_of([CSVLogger(str(tmp_path))]) is None
    assert _switches_on(["--wandb", "--out=x"]) == ["--wandb=true", "--out=x"]
    assert _switches_on(["--out", "x", "--wandb"]) == ["--out", "x", "--wandb=true"]
    assert _switches_on(["--wandb", "false"]) == ["--wandb", "false"]


@pytest.mark.slow  # three CLI processes: fit, fid of its checkpoint, fid of a folder (about a minute)
def test_fid_wandb_puts_the_result_beside_the_checkpoint_s_training_curves(tmp_path):
    # W&B offline, as a user without an API key has it; each command in a process of its own, as a user runs them
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_MODE="offline", OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO), str(TESTS)]))
    root = tmp_path / "runs"

    def run(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "ncsn_pl", *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=600)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    run("fit", "--config", str(CONFIGS / "quickstart.yaml"), "--config", str(CONFIGS / "cpu_smoke.yaml"),
        f"--trainer.default_root_dir={root}", "--trainer.callbacks=[]", "--trainer.limit_val_batches=0.0")
    (checkpoint,) = root.rglob("last.ckpt")
    (training,) = offline_run_dirs(root)
    training_id = read_offline_run(training)["run_id"]
    assert torch.load(checkpoint, weights_only=True)["wandb_run"]["id"] == training_id
    fid = ["fid", *TINY, f"--quality.cache_dir={tmp_path / 'cache'}", "--num_samples=8", "--batch_size=8", *CPU]
    printed = run(*fid, f"--ckpt_path={checkpoint}", f"--out={tmp_path / 'fid.json'}", "--wandb")
    result = json.loads((tmp_path / "fid.json").read_text())
    assert f"Logged to W&B run {training_id} (project ncsn-pl)" in printed
    added = [p for p in offline_run_dirs(root) if p != training]  # a second offline part of the training run
    (logged,) = [read_offline_run(p, history_keys=["fid"]) for p in added]
    assert logged["run_id"] == training_id and logged["summary"]["fid"] == pytest.approx(result["fid"])
    assert logged["summary"]["trainer/global_step"] == 2 and logged["summary"]["num_samples"] == 8
    assert logged["config"]["fid"]["source"]["checkpoint"] == str(checkpoint.resolve())

    # no checkpoint run to join (a folder of images): a new run, named and in the project given
    run(*fid, f"--images={tmp_path / 'fid_samples'}", "--dataset=digits", f"--out={tmp_path / 'images.json'}",
        "--wandb=true", "--wandb_project=digits-evals", "--wandb_name=paper-scale")
    (new,) = offline_run_dirs(tmp_path)  # under the working folder (--trainer.default_root_dir)
    record = read_offline_run(new)
    assert record["name"] == "paper-scale" and record["run_id"] != training_id
    assert record["summary"]["fid"] == pytest.approx(json.loads((tmp_path / "images.json").read_text())["fid"])
