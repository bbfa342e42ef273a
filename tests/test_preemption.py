"""Preemption as clusters and W&B sweeps do it: the job or trial is stopped by SIGTERM, then started again with the
same command, which continues the run in its folder."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import wandb
from cli_runs import CONFIGS, SMOKE, fit_digits, run_dirs
from cluster_runs import ROOT, environment

from ncsn_pl.runs.reading import offline_run_dirs


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


# ------------------------------------------------------------------ a SLURM job that requeues itself
SBATCH = ROOT / "examples" / "slurm" / "fit_requeue.sbatch"


def slurm_job(tmp_path: Path, *options: str, restarts: int = 0, srun: str = 'exec "$@"') -> subprocess.Popen:
    """The sbatch script as SLURM runs it, one task (``srun`` runs the command; ``scontrol`` records the call)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "srun").write_text(f"#!/bin/bash\n{srun}\n")
    (bin_dir / "scontrol").write_text(f'#!/bin/bash\necho "$@" >> {tmp_path / "scontrol.log"}\n')
    for tool in ("srun", "scontrol"):
        (bin_dir / tool).chmod(0o755)
    slurm = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "ncsn-fit", "SLURM_SUBMIT_DIR": str(ROOT),
             "SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1", "SLURM_NNODES": "1", "SLURM_NODEID": "0",
             "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODELIST": "127.0.0.1",
             "SLURM_RESTART_COUNT": str(restarts)}  # fmt: skip
    env = environment(**slurm, NCSN_ROOT=str(tmp_path / "runs"), PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return subprocess.Popen(["bash", str(SBATCH), *options], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip


def job_options(tmp_path: Path) -> list[str]:
    wait = {"class_path": "cluster_runs.AwaitSigtermOnce", "init_args": {"step": 2, "marker": str(tmp_path / "pid")}}
    return ["--config", str(CONFIGS / "quickstart.yaml"), "--config", SMOKE,
            f"--trainer.callbacks=[{json.dumps(wait)}]", "--trainer.max_steps=4", "--trainer.max_epochs=-1",
            "--trainer.limit_val_batches=0.0", "--data.init_args.batch_size=8"]  # fmt: skip


def requeues(tmp_path: Path) -> list[str]:
    log = tmp_path / "scontrol.log"
    return log.read_text().splitlines() if log.is_file() else []


@pytest.fixture(scope="module")
def preempted_job(tmp_path_factory):
    """A job stopped by SLURM after two steps: SIGTERM to the batch shell and to the training process."""
    tmp_path = tmp_path_factory.mktemp("slurm")
    job = slurm_job(tmp_path, *job_options(tmp_path))
    try:
        deadline = time.monotonic() + 180
        while not (tmp_path / "pid").is_file() and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        job.send_signal(signal.SIGTERM)  # a preemption signals the batch shell too
        os.kill(int((tmp_path / "pid").read_text()), signal.SIGTERM)  # --signal=TERM@120: the job step
        output, _ = job.communicate(timeout=180)
    finally:
        job.kill()
    return tmp_path, job.returncode, output, requeues(tmp_path)


def test_the_sbatch_script_requeues_a_preempted_job(preempted_job):
    tmp_path, returncode, output, requeued = preempted_job
    assert returncode == 143, output[-3000:]
    assert requeued == ["requeue 4242"]
    (last,) = (tmp_path / "runs").rglob("last.ckpt")
    assert torch.load(last, weights_only=True)["global_step"] == 2
    assert f"Preempted: requeueing job 4242, which continues from {tmp_path / 'runs'}" in output


@pytest.mark.parametrize("status", [0, 1, 2, 143])
def test_the_sbatch_script_requeues_only_a_preempted_run(tmp_path, status):
    job = slurm_job(tmp_path, "--config", "configs/quickstart.yaml", srun=f'echo "$@"; exit {status}')
    output, _ = job.communicate(timeout=60)
    assert job.returncode == status  # the run's own exit status, for sacct
    assert output.splitlines()[0] == (f"python -m ncsn_pl fit --config configs/quickstart.yaml "
                                      f"--trainer.default_root_dir={tmp_path / 'runs'} --ckpt_path last")  # fmt: skip
    assert requeues(tmp_path) == (["requeue 4242"] if status == 143 else [])  # a finished run or a mistake: never


def test_the_requeued_job_continues_with_the_same_command(preempted_job):
    tmp_path, *_ = preempted_job
    job = slurm_job(tmp_path, *job_options(tmp_path), restarts=1)
    output, _ = job.communicate(timeout=300)
    assert job.returncode == 0, output[-3000:]
    assert requeues(tmp_path) == ["requeue 4242"]  # not again
    (last,) = (tmp_path / "runs").rglob("last.ckpt")  # the same run folder, continued
    assert torch.load(last, weights_only=True)["global_step"] == 4


def test_the_readme_shows_the_tested_script():
    assert f"```bash\n{SBATCH.read_text()}```" in (ROOT / "README.md").read_text()
