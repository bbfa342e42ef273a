"""The CLI as users run it, in its own processes: DDP on the CPU with gloo, and a SIGTERM (preemption)."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ncsn_pl.runs.reading import read_metrics_csv
from ncsn_pl.tools.compare import collect_runs

CONFIGS = Path(__file__).parents[1] / "configs"


def cli(tmp_path: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "ncsn_pl",
        "fit",
        "--config",
        str(CONFIGS / "quickstart.yaml"),
        "--config",
        str(CONFIGS / "cpu_smoke.yaml"),
        f"--trainer.default_root_dir={tmp_path}",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--trainer.callbacks=[]",
        "--data.init_args.batch_size=8",
        "--trainer.limit_val_batches=0.0",
        *extra,
    ]


def statuses(root: Path) -> list[str]:
    """The status ``compare`` gives each run under ``root``."""
    return [row.status for row in collect_runs([str(root)], metric="train/loss").rows]


def environment() -> dict[str, str]:
    return {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}


def test_ddp_with_two_gloo_processes(tmp_path):
    result = subprocess.run(
        cli(tmp_path, "--trainer.strategy=ddp", "--trainer.devices=2"),
        env=environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "distributed_backend=gloo" in result.stderr + result.stdout
    assert "MEMBER: 2/2" in result.stderr + result.stdout
    (checkpoint,) = tmp_path.rglob("last.ckpt")
    assert torch.load(checkpoint, weights_only=False)["global_step"] == 2
    # one run folder: only rank 0 writes the config and the metrics
    assert len(list(tmp_path.rglob("config.yaml"))) == 1


def test_sigterm_leaves_a_checkpoint_to_resume_from(tmp_path):
    process = subprocess.Popen(
        cli(tmp_path, "--trainer.max_steps=-1", "--trainer.max_epochs=1000", "--trainer.limit_train_batches=1000"),
        env={**environment(), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while not list(tmp_path.rglob("config.yaml")) and time.time() < deadline:
            time.sleep(0.5)
        time.sleep(4)  # a few training steps
        assert statuses(tmp_path) == ["running"]  # compare sees the live fit
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 143, output[-2000:]  # 128 + SIGTERM: a scheduler sees a preempted run
    assert statuses(tmp_path) == ["interrupted"]
    (checkpoint,) = tmp_path.rglob("last.ckpt")
    assert "Stopped by SIGTERM at step" in output and f"resume with --ckpt_path {checkpoint}" in output
    state = torch.load(checkpoint, weights_only=False)
    assert state["global_step"] > 0, output[-2000:]
    resumed = subprocess.run(
        cli(
            tmp_path,
            f"--ckpt_path={checkpoint}",
            f"--trainer.max_steps={state['global_step'] + 1}",
            "--trainer.max_epochs=1000",
            "--trainer.limit_train_batches=1000",
        ),
        env=environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Restored all states from the checkpoint" in resumed.stderr + resumed.stdout
    assert [p.name for p in tmp_path.glob("version_*")] == ["version_0"]  # the run continued in its folder
    assert statuses(tmp_path) == ["finished"]


@pytest.mark.slow  # a whole fit in a process; tests/test_compare.py reads such a folder in the default run
def test_a_killed_fit_is_not_called_finished(tmp_path):
    logger = {"class_path": "ncsn_pl.training.RunLogger",
              "init_args": {"save_dir": str(tmp_path), "flush_logs_every_n_steps": 5}}  # fmt: skip
    process = subprocess.Popen(
        cli(tmp_path, "--trainer.max_steps=-1", "--trainer.max_epochs=1000", "--trainer.limit_train_batches=1000",
            f"--trainer.logger={json.dumps(logger)}"),
        env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.time() + 240
        while not logged_steps(tmp_path) and time.time() < deadline and process.poll() is None:
            time.sleep(0.2)  # the logger writes metrics.csv every 5 steps
    finally:
        process.kill()  # SIGKILL: nothing runs on the way out
        process.wait(timeout=60)
    (row,) = collect_runs([str(tmp_path)], metric="train/loss").rows
    assert row.status == "killed" and row.rank is None and row.steps >= 19


def logged_steps(root: Path) -> bool:
    """Whether a run under ``root`` has written the rows of its first 20 steps to metrics.csv."""
    steps = [step for path in root.rglob("metrics.csv") for history in read_metrics_csv(path).values()
             for step, _ in history]  # fmt: skip
    return max(steps, default=0) >= 19


def test_two_fits_started_together_get_a_folder_each(tmp_path):
    command = cli(tmp_path, "--trainer.max_steps=3", "--trainer.max_epochs=2", "--checkpoint.every_n_train_steps=1")
    runs = [subprocess.Popen(command, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for _ in range(2)]  # fmt: skip
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    folders = sorted(tmp_path.glob("version_*"))
    assert [p.name for p in folders] == ["version_0", "version_1"]
    for folder in folders:
        assert sorted(p.name for p in (folder / "checkpoints").glob("last*")) == ["last.ckpt"]
        assert torch.load(folder / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 3
        assert (folder / "config.yaml").is_file()
        with (folder / "metrics.csv").open() as file:
            steps = [row["step"] for row in csv.DictReader(file) if row.get("train/loss")]
        assert len(steps) == len(set(steps)) == 3  # one run's rows only


def test_a_mistake_ends_in_one_line_unless_debugging(tmp_path):
    command = cli(tmp_path, "--model.sigma_min=2.0")
    done = subprocess.run(command, env=environment(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2  # a mistake in the input, as argparse's errors
    assert "error: sigma_min (2.0) must be smaller than sigma_max" in done.stderr and "Traceback" not in done.stderr
    assert "args parameter is intended" not in done.stderr + done.stdout
    debug = subprocess.run(command, env={**environment(), "NCSN_DEBUG": "1"}, capture_output=True, text=True,
                           timeout=300)  # fmt: skip
    assert debug.returncode == 1 and "Traceback" in debug.stderr
