"""W&B with no network: the nested config in an offline run, read back with `wandb leet`; disabled mode; metrics."""

import json
import math
import os
import subprocess
import sys

import pytest
import wandb
import yaml
from cli_runs import CONFIGS
from lightning.pytorch.loggers import WandbLogger

from ncsn_pl.runs.reading import (
    flatten_config,
    offline_run_dirs,
    read_metrics_csv,
    read_offline_run,
    summarize_metric,
)
from ncsn_pl.runs.wandb_glue import default_wandb_mode, log_config

CONFIG = {"model": {"sigma_max": 20.0, "num_scales": 10, "score_net": {"class_path": "ToyScoreMLP"}},
          "trainer": {"max_steps": 3, "logger": [{"class_path": "CSVLogger"}]}, "seed_everything": 0}


@pytest.fixture(autouse=True)
def fresh_wandb():
    # wandb reads WANDB_MODE / WANDB_RUN_ID once per process setup: start and leave a clean one
    wandb.teardown()
    yield
    wandb.finish()
    wandb.teardown()


OFFLINE_RUN = """
import json
import sys
import wandb
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from ncsn_pl.runs.wandb_glue import log_config

logger = WandbLogger(project="ncsn-pl", save_dir=sys.argv[1], name="toy-smax20.0")
assert log_config([CSVLogger(sys.argv[1]), logger], json.loads(sys.argv[2])) == 1  # only W&B loggers take it
logger.log_metrics({"train/loss": 0.75, "val/loss": 0.5}, step=2)
wandb.finish()
"""


def test_nested_config_and_metrics_in_an_offline_run(tmp_path):
    # a process of its own: wandb keeps process-wide state that earlier in-process runs (disabled mode) leave behind
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_RUN_ID": "cfgtest1"}
    done = subprocess.run([sys.executable, "-c", OFFLINE_RUN, str(tmp_path), json.dumps(CONFIG)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = offline_run_dirs(tmp_path)
    assert run_dir.name.endswith("-cfgtest1")
    record = read_offline_run(run_dir, history_keys=["train/loss"])
    assert record["config"]["model"]["sigma_max"] == 20.0  # shown as model.sigma_max in the W&B UI
    assert record["config"]["trainer"]["logger"] == [{"class_path": "CSVLogger"}]
    assert record["summary"]["train/loss"] == 0.75 and record["summary"]["val/loss"] == 0.5
    assert record["history"]["train/loss"] == [(2, 0.75)]
    assert record["name"] == "toy-smax20.0" and record["run_id"] == "cfgtest1" and record["state"] == "finished"


def test_disabled_mode_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    logger = WandbLogger(project="ncsn-pl", save_dir=str(tmp_path))
    assert log_config([logger], CONFIG) == 1
    logger.log_metrics({"train/loss": 1.0}, step=0)
    wandb.finish()
    assert offline_run_dirs(tmp_path) == [] and not (tmp_path / "wandb").exists()


def test_flatten_config_gives_sweep_keys():
    flat = flatten_config(CONFIG)
    assert flat["model.sigma_max"] == 20.0 and flat["model.score_net.class_path"] == "ToyScoreMLP"
    assert flat["trainer.logger"] == [{"class_path": "CSVLogger"}] and flat["seed_everything"] == 0


def test_metrics_csv_and_its_summary(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,step,train/loss,val/fid\n0,4,1.5,\n0,9,,40.0\n1,14,1.2,\n1,19,,nan\n2,29,,35.0\n"
                    "2,39,,38.0\n")
    history = read_metrics_csv(path)
    assert history["train/loss"] == [(4, 1.5), (14, 1.2)]
    assert [s for s, _ in history["val/fid"]] == [9, 19, 29, 39] and math.isnan(history["val/fid"][1][1])
    low = summarize_metric(history["val/fid"])
    assert (low.best, low.best_step, low.last, low.last_step, low.count) == (35.0, 29, 38.0, 39, 4)
    high = summarize_metric(history["val/fid"], goal="maximize")
    assert (high.best, high.best_step) == (40.0, 9)
    assert summarize_metric([]) is None
    assert math.isnan(summarize_metric([(0, float("nan"))]).best)
    with pytest.raises(ValueError, match="minimize"):
        summarize_metric(history["val/fid"], goal="lower")


def test_wandb_goes_offline_by_itself_only_without_credentials_or_a_chosen_mode(tmp_path):
    netrc = tmp_path / "netrc"
    environ = {"NETRC": str(netrc)}
    assert default_wandb_mode(environ) == "offline" and environ["WANDB_MODE"] == "offline"
    chosen = {"NETRC": str(netrc), "WANDB_MODE": "disabled"}
    assert default_wandb_mode(chosen) is None and chosen["WANDB_MODE"] == "disabled"
    assert default_wandb_mode({"NETRC": str(netrc), "WANDB_API_KEY": "x" * 40}) is None
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    logged_in = {"NETRC": str(netrc)}
    assert default_wandb_mode(logged_in) is None and "WANDB_MODE" not in logged_in
    other_host = {"NETRC": str(netrc), "WANDB_BASE_URL": "https://wandb.example.org"}
    assert default_wandb_mode(other_host) == "offline"


def test_without_credentials_the_offline_note_leaves_print_config_and_sweep_validation_intact(tmp_path):
    # the note goes to stderr: --print_config's stdout is what `sweep --validate` parses as YAML
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(NETRC=str(tmp_path / "netrc"), HOME=str(tmp_path))
    done = subprocess.run([sys.executable, "-m", "ncsn_pl", "fit", "--config", "configs/quickstart.yaml",
                           "--print_config"], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "runs are logged offline" in done.stderr and "runs are logged offline" not in done.stdout
    assert yaml.safe_load(done.stdout)["model"]["num_scales"] == 10
    done = subprocess.run([sys.executable, "-m", "ncsn_pl", "sweep", "experiments/sweeps/toy_grid.yaml", "--validate"],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "valid grid sweep" in done.stdout, done.stderr[-2000:]


@pytest.mark.slow  # about 70 s: two offline W&B fits in interpreters of their own
def test_a_resumed_run_continues_its_wandb_run_offline(tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    env.pop("WANDB_RUN_ID", None)
    fit = [sys.executable, "-m", "ncsn_pl", "fit", "--config", str(CONFIGS / "quickstart.yaml"), "--config",
           str(CONFIGS / "cpu_smoke.yaml"), f"--trainer.default_root_dir={tmp_path}", "--trainer.callbacks=[]",
           "--trainer.limit_val_batches=0", "--data.init_args.batch_size=4"]  # fmt: skip
    first = subprocess.run([*fit, "--trainer.max_steps=1"], env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    run_id = (tmp_path / "version_0" / "wandb_run_id").read_text().strip()
    last = tmp_path / "version_0" / "checkpoints" / "last.ckpt"
    second = subprocess.run([*fit, "--trainer.max_steps=2", f"--ckpt_path={last}"], env=env, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert second.returncode == 0, second.stderr[-3000:]
    parts = offline_run_dirs(tmp_path)
    assert len(parts) == 2 and all(p.name.endswith(f"-{run_id}") for p in parts)  # one W&B run, in two parts
    assert (tmp_path / "version_0" / "wandb_run_id").read_text().strip() == run_id
