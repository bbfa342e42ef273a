"""The CLI as users run it, in its own processes: DDP on the CPU with gloo, and a SIGTERM (preemption)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

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
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=120)
    finally:
        process.kill()
    assert "Received SIGTERM" in output or "SIGTERM" in output, output[-2000:]
    (checkpoint,) = tmp_path.rglob("last.ckpt")
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
