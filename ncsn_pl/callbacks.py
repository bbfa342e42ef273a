"""Callbacks: when and where to sample, score and checkpoint; the how lives in the core and the module."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, WeightAveraging
from torch import Tensor
from torchvision.utils import make_grid, save_image
from tqdm.auto import tqdm

from ncsn_pl.samplers import LangevinStep

__all__ = ["SampleGrid", "ResumableCheckpoint", "averaged_module", "langevin_progress", "save_grid", "run_dir"]

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

    Reading the averaged copy directly makes sampling independent of the callbacks' order and of whether the
    averaging callback has swapped the weights in for validation.
    """
    for callback in trainer.callbacks if trainer is not None else []:
        if isinstance(callback, WeightAveraging) and callback._average_model is not None:
            return callback._average_model.module
    return pl_module


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

    Uses the EMA weights when an ``EMAWeightAveraging`` callback is present. Samples are drawn on global rank 0
    with a generator seeded by ``seed``, so grids of one run are comparable over time.

    Args:
        num_samples: images in the grid (25 = the 5x5 grid of the NCSN code).
        every_n_epochs: sample after every n-th training epoch (0 = never).
        every_n_steps: sample every n-th optimizer step (0 = never).
        on_train_end: also sample when training ends (``samples/final.png``).
        n_steps_each: override the model's T for these previews (cheaper grids); ``None`` = the model's.
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
        seed: int = 0,
        progress_bar: bool = True,
    ) -> None:
        super().__init__()
        if num_samples < 1:
            raise ValueError(f"SampleGrid.num_samples must be >= 1, got {num_samples}.")
        self.num_samples = num_samples
        self.every_n_epochs = every_n_epochs
        self.every_n_steps = every_n_steps
        self.sample_on_train_end = on_train_end
        self.n_steps_each = n_steps_each
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
        generator = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        show = self.progress_bar and trainer.progress_bar_callback is not None
        with langevin_progress(model.num_scales * steps, f"Sampling {name}", show) as progress:
            samples = model.sample(self.num_samples, generator=generator, n_steps_each=steps, callback=progress)
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


class ResumableCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` that always keeps ``last.ckpt`` and also writes on an exception or a
    SIGTERM (a preempted job), so ``--ckpt_path <run>/checkpoints/last.ckpt`` resumes the run.

    When the weights are no longer finite (a diverged run) nothing is written on the exception, so ``last.ckpt``
    stays the last good state. All of ``ModelCheckpoint``'s arguments apply (``every_n_train_steps``,
    ``monitor``, ``save_top_k``, ...); ``save_last`` and ``save_on_exception`` default to true.
    """

    def __init__(self, *args: Any, save_last: bool | None = True, save_on_exception: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(*args, save_last=save_last, save_on_exception=save_on_exception, **kwargs)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not all(torch.isfinite(p).all() for p in pl_module.parameters()):
            log.error("The weights are not finite: no checkpoint written; last.ckpt is the last good state.")
            return
        super().on_exception(trainer, pl_module, exception)
