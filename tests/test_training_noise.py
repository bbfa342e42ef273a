"""The noise of training and validation: keyed by micro-batch in training, by validation item in validation."""

import csv
import json
import os
import subprocess
import sys

import pytest
import torch
from cli_runs import CONFIGS, fit_digits, run_dirs
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ncsn_pl.core.losses import spread_levels
from ncsn_pl.core.seeding import step_seed
from ncsn_pl.data import ToyDataModule
from ncsn_pl.networks import ToyScoreMLP
from ncsn_pl.training import ScoreModel
from ncsn_pl.training import module as module_file


def toy_model(seed: int = 0) -> ScoreModel:
    torch.manual_seed(0)
    return ScoreModel(ToyScoreMLP(num_scales=10), sigma_max=10.0, sigma_min=0.1, num_scales=10, lr=1e-3,
                      data_shape=(2,), seed=seed)  # fmt: skip


def toy_trainer(tmp_path, **overrides) -> Trainer:
    settings = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path)  # fmt: skip
    return Trainer(**{**settings, **overrides})


# ------------------------------------------------------------------ the levels of an evaluation
@pytest.mark.parametrize("num_scales", [1, 7, 10, 232])
def test_spread_levels_cover_every_level_once_per_block_and_spread_a_prefix(num_scales):
    levels = spread_levels(torch.arange(3 * num_scales), num_scales)
    for block in levels.view(3, num_scales):
        assert sorted(block.tolist()) == list(range(num_scales))
    assert levels[0] == 0 and levels.dtype == torch.int64
    for n in range(1, num_scales + 1):  # the first n items leave no gap wider than 2L/n between their levels
        taken = sorted(levels[:n].tolist()) + [num_scales]
        assert max(b - a for a, b in zip(taken, taken[1:], strict=False)) <= 2 * num_scales / n


def test_spread_levels_keep_the_shape_and_device_of_the_indices():
    indices = torch.tensor([[0, 10], [3, 13]])
    levels = spread_levels(indices, 10)
    assert levels.shape == (2, 2) and torch.equal(levels[:, 0], levels[:, 1])  # k and k + L share a level


def _validate(tmp_path, devices: int, batch_size: int, limit) -> dict[str, float]:
    data = ToyDataModule(num_train=16, num_val=48, batch_size=batch_size)
    strategy = "ddp_spawn" if devices > 1 else "auto"
    trainer = toy_trainer(tmp_path, devices=devices, strategy=strategy, limit_val_batches=limit)
    trainer.validate(toy_model(), data, verbose=False)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def test_validation_gives_the_same_loss_for_any_batch_size(tmp_path):
    whole = _validate(tmp_path, 1, 12, 1.0)
    assert whole["val/loss"] == pytest.approx(_validate(tmp_path, 1, 5, 1.0)["val/loss"], rel=1e-6)  # short last batch
    # limit_val_batches: the same first 24 items at batch 8 x 3 and 12 x 2, all 10 levels validated
    three, two = _validate(tmp_path, 1, 8, 3), _validate(tmp_path, 1, 12, 2)
    assert three["val/loss"] != pytest.approx(whole["val/loss"], rel=1e-6)
    for key in ["val/loss", *(f"val/loss_level_{level}" for level in range(10))]:
        assert three[key] == pytest.approx(two[key], rel=1e-6), key


@pytest.mark.slow
def test_validation_gives_the_same_loss_on_one_and_two_processes(tmp_path):
    # limit_val_batches: the first 32 items either way (rank r of 2 takes items r, r + 2, ...)
    one, two = _validate(tmp_path, 1, 16, 2), _validate(tmp_path, 2, 8, 2)
    for key in ["val/loss", *(f"val/loss_level_{level}" for level in range(10))]:
        assert one[key] == pytest.approx(two[key], rel=1e-6), key


# ------------------------------------------------------------------ training noise under gradient accumulation
def test_micro_batches_of_one_optimizer_step_draw_their_own_levels_and_noise(tmp_path, monkeypatch):
    seeds, levels, real_loss = [], [], module_file.dsm_loss

    def recording_loss(score_fn, x, sigmas, *, generator, **kwargs):
        seeds.append(generator.initial_seed())
        replay = torch.Generator().manual_seed(generator.initial_seed())
        levels.append(torch.randint(0, sigmas.shape[0], (x.shape[0],), generator=replay))
        return real_loss(score_fn, x, sigmas, generator=generator, **kwargs)

    monkeypatch.setattr(module_file, "dsm_loss", recording_loss)
    data = ToyDataModule(num_train=32, num_val=8, batch_size=8)
    toy_trainer(tmp_path, max_steps=2, accumulate_grad_batches=2, limit_val_batches=0).fit(toy_model(), data)
    assert len(seeds) == 4  # 2 optimizer steps of 2 micro-batches
    assert len(set(seeds)) == 4 and not torch.equal(levels[0], levels[1]) and not torch.equal(levels[2], levels[3])
    # the first micro-batch of a step keeps the key of a run without accumulation
    assert seeds[0] == step_seed(0, 0, 0, 0) and seeds[2] == step_seed(0, 0, 1, 0)
    assert seeds[1] == step_seed(0, 0, 0, 0, 1) and seeds[3] == step_seed(0, 0, 1, 0, 1)


class StopAfterStep(Callback):
    """Raise Lightning's SIGTERM exception once ``step`` optimizer steps are done (a preemption mid-epoch)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            raise SIGTERMException()


def test_a_run_with_gradient_accumulation_resumes_bit_for_bit(tmp_path):
    settings = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=6", "--trainer.accumulate_grad_batches=2"]
    straight = fit_digits(tmp_path / "straight", *settings)
    assert straight.trainer.global_step == 3
    stop = '[{"class_path": "test_training_noise.StopAfterStep", "init_args": {"step": 1}}]'
    with pytest.raises(SystemExit):
        fit_digits(tmp_path / "resumed", *settings, f"--trainer.callbacks={stop}")
    (run,) = run_dirs(tmp_path / "resumed")
    last = run / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 1
    resumed = fit_digits(tmp_path / "resumed", *settings, f"--ckpt_path={last}")
    assert resumed.trainer.global_step == 3
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.slow
def test_validation_under_torchrun_gives_the_loss_of_one_process(tmp_path):
    def validate(folder: str, launcher: list[str], *extra: str) -> dict[str, float]:
        root = tmp_path / folder
        logger = json.dumps([{"class_path": "ncsn_pl.training.RunLogger", "init_args": {"save_dir": str(root)}}])
        result = subprocess.run(
            [*launcher, "-m", "ncsn_pl", "validate", "--config", str(CONFIGS / "toy_mixture.yaml"),
             f"--trainer.default_root_dir={root}", f"--trainer.logger={logger}", "--trainer.callbacks=[]",
             "--trainer.limit_val_batches=2", "--data.init_args.num_train=64", *extra],
            env={**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
            timeout=600,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        (metrics,) = root.rglob("metrics.csv")
        (row,) = [r for r in csv.DictReader(metrics.open()) if r.get("val/loss")]
        return {key: float(value) for key, value in row.items() if key.startswith("val/loss")}

    one = validate("one", [sys.executable], "--data.init_args.batch_size=16")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    two = validate("two", torchrun, "--data.init_args.batch_size=8", "--trainer.devices=2", "--trainer.strategy=ddp")
    assert set(one) == {"val/loss", *(f"val/loss_level_{level}" for level in range(10))} == set(two)
    for key, value in one.items():
        assert two[key] == pytest.approx(value, rel=1e-6), key
