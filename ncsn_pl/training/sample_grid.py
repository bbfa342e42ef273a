"""Pictures of samples during training: when to draw them and where they go (a grid of images, or a scatter of 2-D
samples over the data's density)."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

from ncsn_pl.core.samplers import Sampler
from ncsn_pl.data.contract import KnownDensity, LogDensity
from ncsn_pl.data.image_files import save_grid
from ncsn_pl.data.sample_plots import plot_samples_2d
from ncsn_pl.runs.wandb_glue import run_dir
from ncsn_pl.training.ema import averaged_module
from ncsn_pl.training.image_logging import log_image
from ncsn_pl.training.progress import sampling_progress
from ncsn_pl.training.schedule import EvalSchedule

__all__ = ["SampleGrid"]

log = logging.getLogger(__name__)


class SampleGrid(Callback):
    """Draw samples every ``every_n_epochs`` epochs (or ``every_n_steps`` steps) and at the end of training, save
    a PNG grid in ``<run dir>/samples/`` and log it to the loggers that take images (W&B, TensorBoard).

    Small images (8x8 digits, 28x28 MNIST) are enlarged by an integer factor, nearest neighbour, to at least
    ``display_size`` pixels. 2-D data (the toy mixture) are drawn as a scatter over the contours of the data's true
    log density when the DataModule has it (``datamodule.distribution.log_prob``), else alone.

    Uses the EMA weights when an ``EMAWeightAveraging`` callback is present (read from its averaged copy, so the
    order of the callbacks does not matter). Samples are drawn on global rank 0; sample ``k`` is seeded with
    ``step_seed(seed, k)``, so the grids of one run are comparable over time and do not depend on
    ``max_batch_size``.

    Args:
        num_samples: images in the grid (25 = the 5x5 grid of the NCSN code).
        every_n_epochs: sample after every n-th training epoch (0 = never).
        every_n_steps: sample every n-th optimizer step (0 = never).
        on_train_end: also sample when training ends (``samples/final.png``).
        sampler: the sampler of these previews (e.g. ``AnnealedLangevin`` with a smaller ``n_steps_each`` for
            cheaper grids); ``None``: the model's.
        max_batch_size: draw at most this many samples per sampler call (bounds the memory of a preview);
            ``None`` = all at once.
        seed: seed of the starting points and the noise.
        progress_bar: show a ``levels x steps`` progress bar while sampling.
        display_size: images smaller than this many pixels are enlarged to at least it (0: never).
    """

    def __init__(
        self,
        num_samples: int = 25,
        every_n_epochs: int = 0,
        every_n_steps: int = 0,
        on_train_end: bool = True,
        sampler: Sampler | None = None,
        max_batch_size: int | None = None,
        seed: int = 0,
        progress_bar: bool = True,
        display_size: int = 64,
    ) -> None:
        super().__init__()
        if num_samples < 1:
            raise ValueError(f"SampleGrid.num_samples must be >= 1, got {num_samples}.")
        if max_batch_size is not None and max_batch_size < 1:
            raise ValueError(f"SampleGrid.max_batch_size must be >= 1 or null, got {max_batch_size}.")
        self.schedule = EvalSchedule("SampleGrid", every_n_epochs, every_n_steps, on_train_end, off="never")
        self.num_samples = num_samples
        self.sampler = sampler
        self.max_batch_size = max_batch_size
        self.seed = seed
        self.progress_bar = progress_bar
        if display_size < 0:
            raise ValueError(f"SampleGrid.display_size must be >= 0 (0 = never enlarge), got {display_size}.")
        self.display_size = display_size
        self.last_path: Path | None = None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.schedule.by_epoch(trainer.current_epoch):
            self.draw(trainer, pl_module, f"epoch_{trainer.current_epoch:04d}")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: object) -> None:
        if self.schedule.at_step(trainer.global_step):
            self.draw(trainer, pl_module, f"step_{trainer.global_step:07d}")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.schedule.at_train_end(trainer.global_step):
            self.draw(trainer, pl_module, "final")

    def draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule, name: str) -> Path | None:
        """Sample, save ``samples/<name>.png`` (a grid, or a 2-D scatter) and log it; returns the path on rank 0
        (nothing under ``fast_dev_run``, which writes nothing, as Lightning's loggers and checkpoints)."""
        if not trainer.is_global_zero or trainer.fast_dev_run:
            return None
        model = averaged_module(trainer, pl_module)
        sampler = model.resolve_sampler(self.sampler)
        show = self.progress_bar and trainer.progress_bar_callback is not None
        progress = sampling_progress(
            model.num_scales, sampler, self.num_samples, self.max_batch_size, f"Sampling {name}", show
        )
        with progress as callback, torch.inference_mode():
            samples = model.sample(
                self.num_samples, seed=self.seed, sampler=sampler, batch_size=self.max_batch_size, callback=callback
            )
        path = run_dir(trainer) / "samples" / f"{name}.png"
        if samples.ndim == 4:
            picture = save_grid(samples, path, display_size=self.display_size)
        elif samples.ndim == 2 and samples.shape[1] == 2:
            datamodule = trainer.datamodule
            density = datamodule.distribution if isinstance(datamodule, KnownDensity) else None
            log_prob = density.log_prob if isinstance(density, LogDensity) else None
            centres = getattr(density, "means", None)  # a GaussianMixture's component means, marked on the plot
            title = f"{name}: {samples.shape[0]} samples" + (" over log p(x)" if log_prob is not None else "")
            picture = plot_samples_2d(samples, path, log_prob, centres if torch.is_tensor(centres) else None, title)
        else:
            log.info("SampleGrid: data of shape %s are neither images nor 2-D; nothing drawn.", samples.shape[1:])
            return None
        self.last_path = path
        log_image(trainer.loggers, "samples", picture, name, trainer.global_step)
        return path
