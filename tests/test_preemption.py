"""Preemption as clusters and W&B sweeps do it: the job or trial is stopped by SIGTERM, then started again with the
same command, which continues the run in its folder."""

import json
import subprocess
import sys

import pytest
import torch
import wandb
from cli_runs import fit_digits, run_dirs

from ncsn_pl.tools.tracking import offline_run_dirs


def sigterm_once(step: int, marker) -> str:
    spec = {"class_path": "cluster_runs.SigtermOnce", "init_args": {"step": step, "marker": str(marker)}}
    return f"--trainer.callbacks=[{json.dumps(spec)}]"


def record_types(run_dir) -> list[str]:
    """The types of the records of an offline W&B run, in order (``wandb leet inspect --json``)."""
    listing = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(run_dir)],
                             capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    return [json.loads(line).get("type") for line in listing.stdout.splitlines() if line.startswith("{")]


@pytest.fixture
def sweep_agent_env(monkeypatch):
    """The environment ``wandb agent`` gives a trial (W&B offline: no server here)."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_RUN_ID", "trial042")
    monkeypatch.setenv("WANDB_SWEEP_ID", "sweep01")
    wandb.finish()
    wandb.teardown()  # wandb reads the environment once per process setup
    yield
    wandb.finish()
    wandb.teardown()


def test_a_preempted_sweep_trial_is_marked_and_its_rerun_continues_it(tmp_path, sweep_agent_env):
    command = ["--trainer.max_steps=4", "--trainer.max_epochs=-1", "--trainer.log_every_n_steps=1",
               sigterm_once(2, tmp_path / "preempted")]  # fmt: skip
    with pytest.raises(SystemExit) as stopped:
        fit_digits(tmp_path, *command)
    assert stopped.value.code == 143
    wandb.finish()
    (run,) = run_dirs(tmp_path)
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    (first,) = offline_run_dirs(tmp_path)
    assert first.name.endswith("-trial042") and "preempting" in record_types(first)  # W&B requeues the trial

    wandb.teardown()
    resumed = fit_digits(tmp_path, *command)  # the agent runs the requeued trial: the same command and run id
    assert resumed.trainer.global_step == 4
    assert run_dirs(tmp_path) == [run]  # continued in its folder
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    steps = [row.split(",")[1] for row in (run / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == ["0", "1", "2", "3"]  # each step once
    assert [p.name.endswith("-trial042") for p in offline_run_dirs(tmp_path)] == [True, True]  # one W&B run
