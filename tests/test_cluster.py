"""``fit``, ``sample`` and ``fid`` launched as a cluster launches them: ``torchrun --nproc_per_node=2`` and two tasks
with SLURM's variables, gloo on the CPU, with a strategy that refuses tensors NCCL would refuse (``cluster_runs``).

Each launch starts two fresh interpreters (about 10-20 s on 2 cores), so these tests are few; the start-up race of
a fresh sample folder is repeated many times only under ``-m slow``.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runs import smoke_checkpoint
from cluster_runs import TWO_CPUS, slurm_tasks, torchrun, wait_all

from ncsn_pl.commands.cli import main
from ncsn_pl.metrics import total_variation

CONFIGS = Path(__file__).parents[1] / "configs"
QUIET = ["--trainer.enable_progress_bar=false"]
TINY = ["--quality.feature_extractor=tiny_models.TinyFeatures", "--num_real=30"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return smoke_checkpoint(tmp_path_factory.mktemp("fit"))


def sample_args(checkpoint: Path, out: Path, num_samples: int = 5) -> list[str]:
    return ["sample", "--ckpt_path", str(checkpoint), f"--num_samples={num_samples}", "--batch_size=2", "--seed=3",
            f"--out_dir={out}", *QUIET]  # fmt: skip


def draw_alone(checkpoint: Path, out: Path, num_samples: int = 5) -> Path:
    main([*sample_args(checkpoint, out, num_samples), "--trainer.accelerator=cpu", "--trainer.devices=1"])
    return out


def test_sample_under_torchrun_continues_a_half_filled_folder(checkpoint, tmp_path):
    straight = draw_alone(checkpoint, tmp_path / "straight")
    half = draw_alone(checkpoint, tmp_path / "half", num_samples=2)
    filled = torchrun([*sample_args(checkpoint, half), *TWO_CPUS])
    assert filled.returncode == 0, filled.stderr[-3000:]
    record = json.loads((half / "sample.json").read_text())
    assert record["complete"] and record["world_size"] == 2 and record["drawn_by_this_run"] == 3
    assert np.array_equal(np.load(half / "samples.npz")["samples"], np.load(straight / "samples.npz")["samples"])


@pytest.mark.slow  # about 60 s: two launches
def test_sample_under_torchrun_and_slurm_on_a_fresh_folder(checkpoint, tmp_path):
    straight = draw_alone(checkpoint, tmp_path / "straight")
    fresh = torchrun([*sample_args(checkpoint, tmp_path / "fresh"), *TWO_CPUS])
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    tasks = wait_all(slurm_tasks([*sample_args(checkpoint, tmp_path / "slurm"), *TWO_CPUS]))
    assert [code for code, _ in tasks] == [0, 0], tasks[0][1][-3000:]
    for folder in (tmp_path / "fresh", tmp_path / "slurm"):
        record = json.loads((folder / "sample.json").read_text())
        assert record["complete"] and record["world_size"] == 2 and record["drawn_by_this_run"] == 5
        assert np.array_equal(np.load(folder / "samples.npz")["samples"], np.load(straight / "samples.npz")["samples"])


def test_a_refused_folder_stops_both_tasks_with_one_line(checkpoint, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("someone else's\n")
    (zero, first), (one, second) = wait_all(slurm_tasks([*sample_args(checkpoint, out), *TWO_CPUS]), timeout=240)
    assert zero == one == 2, first[-2000:] + second[-2000:]  # a mistake in the input: status 2 on every task
    both = first + second
    assert both.count("is not empty and is not a sample folder") == 1, both[-3000:]
    assert "Traceback" not in both
    assert [p.name for p in out.iterdir()] == ["notes.txt"]  # nothing written


@pytest.mark.slow  # about 60 s: two interpreters and the FID
def test_fid_with_slurm_variables_on_a_fresh_folder(checkpoint, tmp_path):
    out = tmp_path / "fid.json"
    args = ["fid", "--ckpt_path", str(checkpoint), "--num_samples=6", "--batch_size=2", f"--out={out}", *TINY,
            *QUIET, *TWO_CPUS]  # fmt: skip
    (zero, first), (one, second) = wait_all(slurm_tasks(args), timeout=240)
    assert zero == one == 0, first[-3000:] + second[-3000:]
    result = json.loads(out.read_text())
    assert result["world_size"] == 2 and result["drawn_by_this_run"] == 6 and np.isfinite(result["fid"])
    # the noisy share is counted on both ranks and added: the share of the whole set
    shards = sorted((tmp_path / "fid_samples" / "shards").glob("*.npz"))
    samples = torch.cat([torch.from_numpy(np.load(shard)["samples"]) for shard in shards])
    threshold = result["noisy_share_real"]["threshold"]
    assert result["noisy_share"] == pytest.approx((total_variation(samples) > threshold).float().mean().item())


@pytest.mark.slow  # about 60 s: two interpreters (the poisoned-batch test below also fits under torchrun)
def test_fit_under_torchrun(tmp_path):
    args = fit_args(tmp_path, "--trainer.callbacks=[]", "--trainer.limit_val_batches=1")
    result = torchrun(args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list(tmp_path.rglob("config.yaml"))) == 1 and len(list(tmp_path.rglob("last.ckpt"))) == 1


@pytest.mark.slow  # about 15 s a launch
@pytest.mark.parametrize("attempt", range(int(os.environ.get("NCSN_RACE_REPEATS", "8"))))
def test_a_fresh_sample_folder_never_races_at_start_up(checkpoint, tmp_path, attempt):
    result = torchrun([*sample_args(checkpoint, tmp_path / "s", num_samples=2), *TWO_CPUS])
    assert result.returncode == 0, result.stderr[-3000:]


def fit_args(root: Path, *extra: str) -> list[str]:
    return ["fit", "--config", str(CONFIGS / "quickstart.yaml"), "--config", str(CONFIGS / "cpu_smoke.yaml"),
            f"--trainer.default_root_dir={root}", f"--trainer.logger.init_args.save_dir={root}",
            "--data.init_args.batch_size=4", "--trainer.limit_val_batches=0", *TWO_CPUS, *extra]  # fmt: skip


POISON = '--trainer.callbacks=[{"class_path": "cluster_runs.PoisonBatch", "init_args": {"rank": 1, "step": 1}}]'


def test_a_poisoned_batch_on_one_rank_stops_both_with_one_line(tmp_path):
    result = torchrun(fit_args(tmp_path, POISON, "--trainer.max_steps=3", "--checkpoint.every_n_train_steps=1"),
                      timeout=240)  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert output.count("Non-finite training loss at step 1: noise level(s)") == 1, output[-3000:]
    steps = [torch.load(p, weights_only=False)["global_step"] for p in tmp_path.rglob("*.ckpt")]
    assert steps and max(steps) == 1  # the checkpoint of step 1 was written before the bad step; none after
