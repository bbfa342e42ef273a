"""The toy sample-quality metrics against closed forms, and the callback that logs them during validation."""

import json
import math
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch import Trainer
from tiny_models import ExactToyScore

from ncsn_pl.core.distributions import GaussianMixture
from ncsn_pl.core.samplers import seeded_annealed_langevin
from ncsn_pl.core.seeding import sample_seeds
from ncsn_pl.core.sigmas import geometric_sigmas
from ncsn_pl.data import ImageDataModule, ToyDataModule
from ncsn_pl.metrics.sample_distances import mode_weight_error, random_directions, sliced_wasserstein
from ncsn_pl.training import ScoreModel, ToySampleQuality


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(("dim", "shift", "s1", "s2"), [(1, 3.0, 1.0, 2.0), (2, 4.0, 1.0, 1.0), (5, 2.0, 0.5, 1.5)])
def test_sliced_wasserstein_of_isotropic_gaussians_is_the_closed_form(dim, shift, s1, s2):
    # SW_2^2 = E_theta (theta^T (m1 - m2))^2 + (s1 - s2)^2 = |m1 - m2|^2 / D + (s1 - s2)^2
    n = 5000
    mean = torch.zeros(dim, dtype=torch.float64)
    mean[0] = shift
    x = s1 * torch.randn(n, dim, generator=gen(0), dtype=torch.float64)
    y = mean + s2 * torch.randn(n, dim, generator=gen(1), dtype=torch.float64)
    expected = math.sqrt(shift**2 / dim + (s1 - s2) ** 2)
    value = sliced_wasserstein(x, y, num_projections=1000, generator=gen(2)).item()
    assert value == pytest.approx(expected, rel=0.04)


def test_sliced_wasserstein_basics():
    x = torch.randn(500, 3, generator=gen(0))
    assert sliced_wasserstein(x, x, generator=gen(1)).item() == pytest.approx(0.0, abs=1e-12)
    shuffled = x[torch.randperm(500, generator=gen(2))]
    assert sliced_wasserstein(x, shuffled, generator=gen(1)).item() == pytest.approx(0.0, abs=1e-12)
    # in one dimension both directions are +-1: the exact W_2 of the sorted points
    a, b = torch.randn(100, 1, generator=gen(3)), torch.randn(100, 1, generator=gen(4)) + 1
    exact = (a.sort(0).values - b.sort(0).values).pow(2).mean().sqrt().item()
    assert sliced_wasserstein(a, b, num_projections=3, generator=gen(5)).item() == pytest.approx(exact)
    assert math.isinf(sliced_wasserstein(x, torch.full_like(x, math.nan)).item())
    directions = random_directions(4, 7, gen(6))
    assert directions.shape == (4, 7) and torch.allclose(directions.norm(dim=0), torch.ones(7, dtype=torch.float64))
    with pytest.raises(ValueError, match="same N and D"):
        sliced_wasserstein(x, x[:10])


def test_mode_weight_error_of_the_paper_mixture():
    mixture = GaussianMixture()
    exact = mixture.sample(20_000, generator=gen(0))
    assert mixture.component_fractions(exact).tolist() == pytest.approx([0.8, 0.2], abs=0.01)
    assert mode_weight_error(exact, mixture).item() < 0.01
    even = torch.cat([torch.full((50, 2), 5.0), torch.full((50, 2), -5.0)])
    assert mode_weight_error(even, mixture).item() == pytest.approx(0.3)  # plain Langevin's even split
    half_diverged = torch.cat([torch.full((80, 2), 5.0), torch.full((20, 2), math.inf)])
    assert mode_weight_error(half_diverged, mixture).item() == pytest.approx(0.2)  # 0.2 of the mass missing


def test_annealed_langevin_scores_better_than_a_schedule_far_below_the_data_spread():
    # the paper's finding with the exact score: sigma 20 -> 1 recovers the 0.8 / 0.2 weights; a largest sigma far
    # below the distance between the modes (14) leaves the samples where they started, about half at each mode
    mixture, n = GaussianMixture(), 400
    exact = mixture.sample(n, generator=gen(1))
    scores = {}
    for sigma_max in (20.0, 2.0):
        sigmas = geometric_sigmas(sigma_max, 1.0, 10)
        x = seeded_annealed_langevin(mixture.score_fn(sigmas), sigmas, (2,), sample_seeds(0, range(n)),
                                     init_range=(-8.0, 8.0), n_steps_each=30, step_lr=0.1)
        distance = sliced_wasserstein(x, exact, generator=gen(2)).item()
        scores[sigma_max] = (distance, mode_weight_error(x, mixture).item())
    assert scores[20.0][1] < 0.06 and scores[2.0][1] > 0.15
    assert scores[20.0][0] < 0.5 * scores[2.0][0]


def fit_with_monitor(tmp_path, monitor, **model_settings):
    torch.manual_seed(0)
    settings = dict(sigma_max=20.0, sigma_min=1.0, num_scales=5, n_steps_each=5, step_lr=0.1, init_range=(-8.0, 8.0),
                    data_shape=(2,))
    settings.update(model_settings)
    model = ScoreModel(ExactToyScore(num_scales=settings["num_scales"]), **settings)
    trainer = Trainer(accelerator="cpu", devices=1, max_epochs=2, limit_train_batches=1, limit_val_batches=1,
                      num_sanity_val_steps=1, enable_progress_bar=False, enable_model_summary=False,
                      default_root_dir=tmp_path, logger=False, enable_checkpointing=False, callbacks=[monitor])
    trainer.fit(model, ToyDataModule(num_train=32, num_val=32, batch_size=16))
    return trainer


def test_the_callback_logs_both_metrics_each_validation_and_writes_them_down(tmp_path):
    monitor = ToySampleQuality(num_samples=64, every_n_epochs=1)
    trainer = fit_with_monitor(tmp_path, monitor)
    logged = trainer.callback_metrics
    assert set(monitor.last_results) == {"sliced_wasserstein", "mode_weight_error"}
    assert logged["val/sliced_wasserstein"].item() == pytest.approx(monitor.last_results["sliced_wasserstein"])
    assert logged["val/mode_weight_error"].item() == pytest.approx(monitor.last_results["mode_weight_error"])
    records = [json.loads(line) for line in (tmp_path / "sample_quality.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1]  # not at the sanity check
    assert all(r["num_samples"] == 64 for r in records)
    assert records[0]["sliced_wasserstein"] == records[1]["sliced_wasserstein"]  # seeded: the same samples


def test_a_diverging_sampler_scores_worst_instead_of_stopping_the_run(tmp_path):
    monitor = ToySampleQuality(num_samples=16)
    fit_with_monitor(tmp_path, monitor, step_lr=1e6)
    assert math.isinf(monitor.last_results["sliced_wasserstein"]) and monitor.last_results["mode_weight_error"] == 1


def test_the_callback_needs_a_known_distribution():
    images = SimpleNamespace(datamodule=ImageDataModule(dataset="digits"))
    with pytest.raises(ValueError, match="ToyDataModule"):
        ToySampleQuality._distribution(images)
    with pytest.raises(ValueError, match="num_samples"):
        ToySampleQuality(num_samples=1)


def test_a_run_shorter_than_the_interval_is_scored_when_training_ends(tmp_path):
    # the toy config scores every 5 epochs; a 1-epoch trial (a smoke sweep) must still report its metric
    from ncsn_pl.commands.cli import main
    from ncsn_pl.tools.sweep.trial_metric import read_trial_metric

    main(["fit", "--config", "configs/toy_mixture.yaml", f"--trainer.default_root_dir={tmp_path}",
          "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
          "--trainer.enable_progress_bar=false", "--trainer.callbacks.init_args.num_samples=50",
          "--model.n_steps_each=2", "--data.init_args.num_train=64", "--data.init_args.num_val=64",
          "--data.init_args.batch_size=32"])  # fmt: skip
    history, source = read_trial_metric(tmp_path, "val/sliced_wasserstein")
    assert source.endswith("metrics.csv") and [step for step, _ in history] == [2] and math.isfinite(history[0][1])
    (run,) = tmp_path.glob("version_*")
    records = [json.loads(line) for line in (run / "sample_quality.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["step"]) for r in records] == [(1, 2)]  # once, at the end (after epoch 0)
    assert records[0]["sliced_wasserstein"] == pytest.approx(history[0][1])


def test_the_final_model_is_scored_once(tmp_path):
    # the last epoch was scored at its validation: nothing more at the end; without validation, at the end
    scored_last = ToySampleQuality(num_samples=16, every_n_epochs=2)
    fit_with_monitor(tmp_path / "a", scored_last)
    assert [json.loads(x)["epoch"] for x in (tmp_path / "a" / "sample_quality.jsonl").read_text().splitlines()] == [1]
    unscored = ToySampleQuality(num_samples=16, every_n_epochs=5, on_train_end=False)
    fit_with_monitor(tmp_path / "b", unscored)
    assert not (tmp_path / "b" / "sample_quality.jsonl").exists() and unscored.last_results == {}
