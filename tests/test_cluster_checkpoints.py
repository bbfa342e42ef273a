"""``fid_nfe`` and ``fit --ckpt_path last`` launched as a cluster launches them: ``torchrun --nproc_per_node=2`` and
two tasks of a SLURM job step with its variables (a requeued job repeats its command), gloo on the CPU."""

import csv
from pathlib import Path

import pytest
import torch
from cli_runs import smoke_checkpoint
from cluster_runs import TWO_CPUS, slurm_tasks, torchrun, wait_all

from ncsn_pl.commands.cli import main

CONFIGS = Path(__file__).parents[1] / "configs"
TINY = ["--quality.feature_extractor=tiny_models.TinyFeatures", "--num_real=20", "--num_samples=4", "--batch_size=2",
        '--points=["ALS T=1"]', "--trainer.enable_progress_bar=false"]  # fmt: skip


def fid_of(study: Path) -> float:
    with (study / "fid_nfe.csv").open() as file:
        (row,) = list(csv.DictReader(file))
    return float(row["fid"])


def test_fid_nfe_under_torchrun_gives_the_single_process_number(tmp_path):
    ckpt = smoke_checkpoint(tmp_path / "run")
    common = ["fid_nfe", f"--ckpt_path={ckpt}", *TINY, f"--quality.cache_dir={tmp_path / 'cache'}"]
    result = torchrun([*common, f"--out_dir={tmp_path / 'two'}", *TWO_CPUS])
    assert result.returncode == 0, result.stderr[-3000:]
    main([*common, f"--out_dir={tmp_path / 'one'}", "--trainer.accelerator=cpu", "--trainer.devices=1"])
    assert fid_of(tmp_path / "two") == pytest.approx(fid_of(tmp_path / "one"), rel=1e-5)  # same samples, sharded


def test_a_requeued_slurm_job_continues_its_run_with_the_same_command(tmp_path):
    command = ["fit", "--config", str(CONFIGS / "quickstart.yaml"), "--config", str(CONFIGS / "cpu_smoke.yaml"),
               f"--trainer.default_root_dir={tmp_path}", f"--trainer.logger.init_args.save_dir={tmp_path}",
               "--trainer.callbacks=[]", "--data.init_args.batch_size=4", "--trainer.limit_val_batches=0",
               "--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp", "--trainer.max_steps=-1",
               "--ckpt_path=last"]  # fmt: skip

    def job(max_epochs: int) -> list[tuple[int, str]]:
        return wait_all(slurm_tasks([*command, f"--trainer.max_epochs={max_epochs}"]))

    first = job(1)
    assert [code for code, _ in first] == [0, 0], first[0][1][-3000:]
    assert sum(output.count("no last.ckpt in") for _, output in first) == 1  # said once, by global rank 0
    second = job(2)  # the requeued job
    assert [code for code, _ in second] == [0, 0], second[0][1][-3000:]
    assert sum(output.count("--ckpt_path last: continuing from") for _, output in second) == 1
    assert sorted(p.name for p in tmp_path.glob("version_*")) == ["version_0"]
    last = tmp_path / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 4
