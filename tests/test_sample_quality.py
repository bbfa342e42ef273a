"""Per-sample seeded sampling, the sample-grid callback and the FID callback (SampleQualityMonitor).

Tiny networks and a tiny injected feature extractor keep these fast; the real Inception network is tested in
test_metrics_inception.py.
"""

import json
import math

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint
from lightning.pytorch.loggers import Logger
from tiny_models import TinyFeatures, TinyScore
from torchvision.utils import make_grid

from ncsn_pl.core.samplers import AdaptiveVESDE, AnnealedLangevin, seeded_annealed_langevin, step_sizes
from ncsn_pl.core.seeding import PerSampleNoise, shard_indices, step_seed
from ncsn_pl.data import ImageDataModule
from ncsn_pl.data.image_files import upscale_nearest
from ncsn_pl.metrics import QualityOptions, SampleQuality, real_images
from ncsn_pl.networks import NCSNv2
from ncsn_pl.training import SampleGrid, SampleQualityMonitor, ScoreModel


class ImageLogger(Logger):
    """A logger that records what it is given (``log_image`` like WandbLogger's)."""

    def __init__(self, root) -> None:
        super().__init__()
        self.root, self.images, self.metrics = root, [], []

    @property
    def name(self) -> str:
        return "fake"

    @property
    def version(self) -> int:
        return 0

    @property
    def log_dir(self) -> str:
        return str(self.root)

    def log_hyperparams(self, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        self.metrics.append((step, dict(metrics)))

    def log_image(self, key, images, caption=None, step=None) -> None:
        self.images.append((key, images, caption, step))


def tiny_model(**overrides) -> ScoreModel:
    torch.manual_seed(0)
    settings = dict(
        sigma_max=1.0, sigma_min=0.5, num_scales=2, lr=0.1, n_steps_each=1, step_lr=0.05, data_shape=(1, 8, 8)
    )
    settings.update(overrides)
    return ScoreModel(TinyScore(num_scales=settings["num_scales"]), **settings)


def digits() -> ImageDataModule:
    return ImageDataModule(dataset="digits", batch_size=8)


def trainer(tmp_path, callbacks, **overrides) -> Trainer:
    settings = dict(
        accelerator="cpu",
        devices=1,
        max_steps=2,
        limit_train_batches=2,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
    )
    settings.update(overrides)
    return Trainer(callbacks=callbacks, **settings)


def gaussian_score(x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """The exact score of N(0, I) convolved with N(0, s^2 I), s = 0.5 * (1 + level): elementwise per sample."""
    s2 = (0.5 * (1 + levels.to(x.dtype))) ** 2
    return -x / (1 + s2).view(-1, *([1] * (x.ndim - 1)))


SIGMAS = torch.tensor([1.0, 0.5])


# ------------------------------------------------------------------ per-sample seeding
def test_shard_indices_cover_every_sample_once():
    shards = [list(shard_indices(10, r, 3)) for r in range(3)]
    assert shards == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    with pytest.raises(ValueError, match="rank must lie"):
        shard_indices(10, 3, 3)


def test_seeded_samples_do_not_depend_on_batching_or_on_the_other_samples():
    seeds = [step_seed(7, k) for k in range(7)]
    kwargs = dict(n_steps_each=3, step_lr=0.01)
    def draw(some_seeds, batch_size=None):
        batch_size = batch_size or len(some_seeds)
        batches = [some_seeds[i : i + batch_size] for i in range(0, len(some_seeds), batch_size)]
        return torch.cat([seeded_annealed_langevin(gaussian_score, SIGMAS, (2, 3), b, **kwargs) for b in batches])

    whole = draw(seeds)
    batched = draw(seeds, batch_size=3)
    # two "ranks": k = 0, 2, 4, 6 and k = 1, 3, 5
    even = draw(seeds[0::2], batch_size=2)
    odd = draw(seeds[1::2])
    assert torch.equal(whole, batched)
    assert torch.equal(whole[0::2], even) and torch.equal(whole[1::2], odd)
    other = draw([step_seed(8, k) for k in range(7)])
    assert not torch.allclose(whole, other)
    assert whole.std() > 0.1  # not collapsed: the noise really is drawn


def test_each_sample_follows_its_own_noise_stream_like_a_hand_written_loop():
    seeds, shape, steps, step_lr, init = [11, 12, 13], (4,), 3, 0.02, (-1.0, 2.0)
    result = seeded_annealed_langevin(
        gaussian_score, SIGMAS, shape, seeds, n_steps_each=steps, step_lr=step_lr, init_range=init
    )
    for row, seed in zip(result, seeds, strict=True):
        stream = PerSampleNoise([seed])  # this sample's stream alone: its draws in order
        x = init[0] + (init[1] - init[0]) * stream.rand((1, *shape))
        for level, a in enumerate(step_sizes(SIGMAS, step_lr).tolist()):
            levels = torch.full((1,), level)
            for _ in range(steps):
                z = stream.randn((1, *shape))
                x = x + a * gaussian_score(x, levels) + math.sqrt(2 * a) * z
        torch.testing.assert_close(row, x[0], rtol=0, atol=1e-6)


def test_per_sample_noise_checks_the_batch_and_the_device():
    noise = PerSampleNoise([1, 2])
    with pytest.raises(ValueError, match="leading batch dimension of 2"):
        noise.randn((3, 4))
    with pytest.raises(ValueError, match="per-sample noise on cpu"):
        noise.randn_like(torch.zeros(2, 3, device="meta"))
    # row i is seed i's stream: the same seed gives the same row, whatever its neighbours
    torch.testing.assert_close(PerSampleNoise([5, 2]).randn((2, 3))[0], PerSampleNoise([5]).randn((1, 3))[0])


def test_model_samples_match_batched_draws_and_divergence_names_level_step_and_samples():
    model = tiny_model()
    torch.testing.assert_close(
        model.sample(range(5), seed=3),
        model.sample(range(5), seed=3, batch_size=2),
        rtol=0,
        atol=1e-6,
    )
    # the network breaks on its 11th call (8 per batch): level 0, step 2 of the second batch (samples 7, 9)
    calls, forward = [0], model.score_net.forward

    def breaks_late(x, levels):
        calls[0] += 1
        return forward(x, levels) * (float("nan") if calls[0] == 11 else 1.0)

    model.score_net.forward = breaks_late
    with pytest.raises(FloatingPointError, match=r"level 0 .*step 2\..*Samples 7\.\.9 \(seed 3\).*step_lr=0.05"):
        model.sample([1, 5, 7, 9], seed=3, batch_size=2, sampler=AnnealedLangevin(n_steps_each=4, step_lr=0.05))
    assert model.score_net.training  # restored


# ------------------------------------------------------------------ sample grid
def test_grid_callback_writes_and_logs_a_grid_drawn_with_the_ema_weights(tmp_path):
    logger = ImageLogger(tmp_path / "run")
    grid_cb = SampleGrid(
        num_samples=5, every_n_epochs=1, on_train_end=False, max_batch_size=2, seed=1, progress_bar=False
    )
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    model = tiny_model()
    trainer(
        tmp_path,
        [grid_cb, EMAWeightAveraging(decay=0.5), checkpoint],
        logger=logger,
        enable_checkpointing=True,
        max_epochs=1,
        max_steps=-1,
        limit_val_batches=0,
    ).fit(model, digits())

    path = tmp_path / "run" / "samples" / "epoch_0000.png"
    assert path.is_file() and grid_cb.last_path == path
    ((key, (logged,), caption, step),) = logger.images
    assert (key, caption, step) == ("samples", ["epoch_0000"], 2)
    assert logged.shape == (3, 2 + 3 * 66, 2 + 2 * 66)  # 5 images of 8 px shown at 64 px, 2 per row, 2 px padding

    # the checkpoint of that epoch: state_dict holds the EMA weights, current_model_state the raw ones
    saved = torch.load(checkpoint.last_model_path, weights_only=True)
    ema, raw = saved["state_dict"], saved["current_model_state"]
    assert not torch.allclose(ema["score_net.conv.weight"], raw["score_net.conv.weight"])

    def grid_of(weights):
        copy = tiny_model()
        copy.load_state_dict(weights)
        samples = copy.sample(range(5), seed=1, batch_size=2)
        return make_grid(upscale_nearest(samples.clamp(0, 1), 8), nrow=2, padding=2)

    torch.testing.assert_close(logged, grid_of(ema), rtol=0, atol=1e-6)
    assert (logged - grid_of(raw)).abs().max() > 1e-3


def test_grid_callback_validates_its_arguments():
    with pytest.raises(ValueError, match="max_batch_size must be >= 1"):
        SampleGrid(max_batch_size=0)
    with pytest.raises(ValueError, match="num_samples must be >= 1"):
        SampleGrid(num_samples=0)


# ------------------------------------------------------------------ FID callback
def expected_fid(weights, num_samples, seed, real) -> float:
    model = tiny_model()
    model.load_state_dict(weights)
    quality = SampleQuality(QualityOptions(feature_extractor=TinyFeatures()))
    quality.update_real(real)
    quality.update_fake(model.sample(range(num_samples), seed=seed))
    return quality.compute()["fid"]


@pytest.mark.parametrize("ema_first", [True, False])
def test_fid_callback_logs_val_fid_of_the_ema_weights_for_model_checkpoint(tmp_path, ema_first):
    monitor = SampleQualityMonitor(
        num_samples=6,
        batch_size=4,
        seed=2,
        num_real=40,
        quality=QualityOptions(feature_extractor=TinyFeatures(), cache_dir=str(tmp_path / "cache")),
        progress_bar=False,
    )
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/fid", mode="min", save_top_k=1)
    ema = EMAWeightAveraging(decay=0.5)
    callbacks = [ema, monitor] if ema_first else [monitor, ema]
    logger = ImageLogger(tmp_path / "run")
    trainer(
        tmp_path, [*callbacks, checkpoint], logger=logger, enable_checkpointing=True, max_epochs=1, max_steps=-1
    ).fit(tiny_model(), digits())

    fid = monitor.last_results["fid"]
    assert checkpoint.best_model_score == pytest.approx(fid)
    assert any("val/fid" in metrics for _, metrics in logger.metrics)
    saved = torch.load(checkpoint.best_model_path, weights_only=True)
    real = digits().train_data(40)
    assert fid == pytest.approx(expected_fid(saved["state_dict"], 6, 2, real), rel=1e-5)
    assert fid != pytest.approx(expected_fid(saved["current_model_state"], 6, 2, real), rel=1e-3)
    # the feature extractor stays out of the checkpoint
    assert all(k == "sigmas" or k.startswith("score_net.") for k in saved["state_dict"])
    assert not any("SampleQualityMonitor" in k for k in saved.get("callbacks", {}))
    # one evaluation, recorded in the run folder; real statistics cached under a readable key
    (line,) = (tmp_path / "run" / "sample_quality.jsonl").read_text().splitlines()
    assert json.loads(line)["fid"] == pytest.approx(fid) and json.loads(line)["step"] == 2
    (cached,) = (tmp_path / "cache").glob("digits-train-8px-n40-*.pt")


def test_fid_callback_without_validation_evaluates_at_epoch_end_and_train_end(tmp_path):
    monitor = SampleQualityMonitor(
        num_samples=4,
        every_n_epochs=2,
        on_train_end=True,
        num_real=20,
        quality=QualityOptions(feature_extractor=TinyFeatures(), cache_dir=str(tmp_path)),
        progress_bar=False,
    )
    logger = ImageLogger(tmp_path / "run")
    trainer(
        tmp_path, [monitor], logger=logger, limit_val_batches=0, max_epochs=3, max_steps=-1, limit_train_batches=1
    ).fit(tiny_model(), digits())
    records = [json.loads(s) for s in (tmp_path / "run" / "sample_quality.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["step"]) for r in records] == [(1, 2), (3, 3)]  # in epoch 1 (the 2nd), then at train end
    assert logger.metrics[-1] == (3, {"val/fid": pytest.approx(records[-1]["fid"]), "val/nfe": 2,  # L x T = 2 x 1
                                      "val/fid_num_samples": 4, "val/fid_num_real": 20})  # fmt: skip
    assert records[-1]["sampler"] == {"seed": 0, "class_path": "ncsn_pl.core.samplers.langevin.AnnealedLangevin",
                                      "init_args": {"n_steps_each": 1, "step_lr": 0.05, "denoise": False}, "nfe": 2}


def test_fid_callback_checks_counts_and_data():
    with pytest.raises(ValueError, match="FID needs at least 2 samples"):
        SampleQualityMonitor(num_samples=1, quality=QualityOptions(feature_extractor=TinyFeatures()))
    with pytest.raises(ValueError, match="kid_subset_size=1000 images but num_samples=10"):
        SampleQualityMonitor(num_samples=10, quality=QualityOptions(kid=True, feature_extractor=TinyFeatures()))
    from ncsn_pl.data import ToyDataModule

    with pytest.raises(ValueError, match="FID needs an image DataModule"):
        real_images(ToyDataModule())


def _validate_fid(tmp_path, devices: int) -> float:
    monitor = SampleQualityMonitor(
        num_samples=7,
        batch_size=3,
        seed=5,
        num_real=30,
        quality=QualityOptions(feature_extractor=TinyFeatures(), cache_dir=str(tmp_path / f"cache{devices}")),
        progress_bar=False,
    )
    strategy = "ddp_spawn" if devices > 1 else "auto"
    run = trainer(tmp_path, [monitor], devices=devices, strategy=strategy)
    run.validate(tiny_model(), digits())
    return float(run.callback_metrics["val/fid"])


def test_two_ddp_spawn_processes_give_the_fid_of_one(tmp_path):
    one = _validate_fid(tmp_path, 1)
    two = _validate_fid(tmp_path, 2)  # each rank draws its share k = r, r + 2, ...; metrics all-reduced
    real = digits().train_data(30)
    assert one == pytest.approx(expected_fid(tiny_model().state_dict(), 7, 5, real), rel=1e-5)
    assert two == pytest.approx(one, rel=1e-5)


def _validate_adaptive(tmp_path, devices: int) -> dict[str, float]:
    monitor = SampleQualityMonitor(
        num_samples=5, batch_size=2, num_real=30, sampler=AdaptiveVESDE(eps_rel=0.1), progress_bar=False,
        quality=QualityOptions(feature_extractor=TinyFeatures(), cache_dir=str(tmp_path / f"cache{devices}")),
    )  # fmt: skip
    torch.manual_seed(0)
    model = ScoreModel(NCSNv2(channels=1, ngf=4), sigma_max=1.0, sigma_min=0.01, num_scales=5, data_shape=(1, 8, 8))
    run = trainer(tmp_path / str(devices), [monitor], devices=devices, strategy="ddp_spawn" if devices > 1 else "auto",
                  logger=ImageLogger(tmp_path / str(devices)))  # fmt: skip
    run.validate(model, digits())
    record = json.loads((tmp_path / str(devices) / "sample_quality.jsonl").read_text().splitlines()[-1])
    assert (record["sampler"]["nfe"], record["sampler"]["nfe_max"]) == (record["nfe"], record["nfe_max"])
    return {k: float(v) for k, v in run.callback_metrics.items()}


def test_fid_callback_logs_the_mean_and_largest_nfe_of_an_adaptive_sampler_over_all_processes(tmp_path):
    one, two = _validate_adaptive(tmp_path, 1), _validate_adaptive(tmp_path, 2)
    assert one["val/nfe_max"] >= one["val/nfe"] > 2 and one["val/nfe_max"] % 2 == 1
    assert two["val/nfe"] == pytest.approx(one["val/nfe"]) and two["val/nfe_max"] == one["val/nfe_max"]
    assert two["val/fid"] == pytest.approx(one["val/fid"], rel=1e-4)
