"""The EMA of the weights with its warm-up (NCSNv2 Technique 5): the decay formula, the average it keeps during a
fit, and every config with an EMA using the warm-up."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import Callback, Trainer
from tiny_models import TinyScore
from torch.optim.swa_utils import AveragedModel

from ncsn_pl.core.averaging import ema_decay, warmup_ema_update
from ncsn_pl.data import ImageDataModule
from ncsn_pl.training import ScoreModel
from ncsn_pl.training.ema import EMAWithWarmup, averaged_module

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_decay_is_min_of_decay_and_one_plus_n_over_ten_plus_n():
    assert ema_decay(0.999, 1) == pytest.approx(2 / 11)
    assert ema_decay(0.999, 100) == pytest.approx(101 / 110)
    assert ema_decay(0.999, 8991) == pytest.approx(0.999)  # (1 + n) / (10 + n) reaches 0.999 at n = 8,991
    assert ema_decay(0.999, 100_000) == 0.999
    assert ema_decay(0.999, 5, warmup=False) == 0.999
    n = torch.tensor([1.0, 100.0, 100_000.0])
    assert torch.allclose(ema_decay(0.999, n), torch.tensor([2 / 11, 101 / 110, 0.999]))


def test_warmup_forgets_the_initialisation_that_plain_ema_keeps():
    # the initialisation's share of the average after N updates is the product of the decays
    def init_share(steps: int, warmup: bool) -> float:
        return math.prod(ema_decay(0.999, n, warmup) for n in range(1, steps + 1))

    assert init_share(1500, warmup=False) == pytest.approx(0.999**1500) == pytest.approx(0.2229, abs=1e-4)
    assert init_share(1500, warmup=True) < 1e-6
    assert init_share(126, warmup=False) == pytest.approx(0.8816, abs=1e-4)


def test_averaged_model_follows_the_recursion():
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    average = AveragedModel(net, multi_avg_fn=warmup_ema_update(0.9))
    expected = None
    for n in range(6):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        average.update_parameters(net)
        current = torch.cat([p.detach().flatten() for p in net.parameters()])
        d = min(0.9, (1 + n) / (10 + n))
        expected = current.clone() if n == 0 else d * expected + (1 - d) * current
    got = torch.cat([p.detach().flatten() for p in average.module.parameters()])
    assert torch.allclose(got, expected, atol=1e-6)


class _RecordWeights(Callback):
    """The raw weights after each optimizer step (after the EMA callback's update)."""

    def __init__(self) -> None:
        self.weights: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.weights.append(torch.cat([p.detach().flatten().clone() for p in pl_module.score_net.parameters()]))


@pytest.mark.parametrize("warmup", [True, False])
def test_fit_keeps_the_warmed_up_average(tmp_path, warmup):
    torch.manual_seed(0)
    model = ScoreModel(TinyScore(num_scales=2), sigma_max=1.0, sigma_min=0.5, num_scales=2, lr=0.1,
                       data_shape=(1, 8, 8))  # fmt: skip
    ema, record = EMAWithWarmup(decay=0.99, warmup=warmup), _RecordWeights()
    trainer = Trainer(accelerator="cpu", max_steps=5, limit_val_batches=0, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                      callbacks=[ema, record])  # fmt: skip
    trainer.fit(model, ImageDataModule(dataset="digits", batch_size=8))
    expected = record.weights[0]
    for n, weights in enumerate(record.weights[1:], start=1):
        d = ema_decay(0.99, n, warmup)
        expected = d * expected + (1 - d) * weights
    averaged = averaged_module(trainer, model)
    got = torch.cat([p.detach().flatten() for p in averaged.score_net.parameters()])
    assert len(record.weights) == 5
    assert torch.allclose(got, expected, atol=1e-6)
    assert not torch.allclose(got, record.weights[-1], atol=1e-3)  # an average, not the last weights


def test_every_config_with_an_ema_warms_it_up():
    with_ema = []
    for path in sorted(CONFIGS.glob("*.yaml")):
        for callback in (yaml.safe_load(path.read_text()) or {}).get("trainer", {}).get("callbacks") or []:
            name = callback.get("class_path", "") if isinstance(callback, dict) else ""
            assert not name.endswith("EMAWeightAveraging"), f"{path.name} averages without the warm-up"
            if name.endswith("EMAWithWarmup"):
                with_ema.append(path.name)
                assert (callback.get("init_args") or {}).get("warmup", True) is True
    assert {"cifar10_v2.yaml", "celeba64_v2.yaml", "fashion_cpu30_v2.yaml"} <= set(with_ema)
