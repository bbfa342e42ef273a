"""Sample quality on data of known density (the toy mixture): a schedule-independent number for sweeps."""

from __future__ import annotations

import logging
import math
import time

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

from ncsn_pl.core.distributions import GaussianMixture
from ncsn_pl.core.samplers import Sampler
from ncsn_pl.core.seeding import step_seed
from ncsn_pl.data.contract import KnownDensity
from ncsn_pl.metrics.sample_distances import mode_weight_error, sliced_wasserstein
from ncsn_pl.runs.step_records import SAMPLE_QUALITY_RECORDS, append_step_record
from ncsn_pl.runs.wandb_glue import run_dir
from ncsn_pl.training.ema import averaged_module, ema_at_validation_epoch_end
from ncsn_pl.training.schedule import EvalSchedule

__all__ = ["ToySampleQuality"]

log = logging.getLogger(__name__)


class ToySampleQuality(Callback):
    """Scores the model's samples against the data's known distribution at the end of validation, logged as
    ``val/sliced_wasserstein`` and ``val/mode_weight_error``.

    The training loss is weighted by each schedule's own sigmas, so its value does not compare between noise
    schedules; these do. The model draws ``num_samples`` samples with its sampler (:meth:`ScoreModel.sample`,
    sample ``k`` seeded by ``step_seed(seed, k)``, the EMA weights when an ``EMAWeightAveraging`` callback is
    present), and they are compared with as many exact samples of the DataModule's ``distribution`` (a
    :class:`~ncsn_pl.core.distributions.GaussianMixture`, as ``ToyDataModule`` has):

    - ``sliced_wasserstein``: the sliced 2-Wasserstein distance between the two sets
      (:func:`~ncsn_pl.metrics.sample_distances.sliced_wasserstein`), in the data's units;
    - ``mode_weight_error``: the total variation between the share of samples at each mode and the mixture's
      weights (:func:`~ncsn_pl.metrics.sample_distances.mode_weight_error`), the NCSN paper's toy finding.

    Both are lower-is-better. A sampler that diverges scores ``inf`` (and up to 1) instead of stopping the run.
    Every evaluation is also appended to ``<run dir>/sample_quality.jsonl`` with its ``num_samples`` (records of
    later steps, left by a run continued from an earlier checkpoint, are dropped). When training ends after an epoch
    that was not scored (a run shorter than ``every_n_epochs``, or one that does not validate), the final model is
    scored too (``on_train_end``), so every finished run reports the metrics.

    Args:
        num_samples: model samples (and exact samples) per evaluation.
        every_n_epochs: evaluate at the validation of every n-th epoch.
        seed: seeds the model's samples, the exact samples and the projections.
        num_projections: directions of the sliced Wasserstein distance.
        batch_size: samples per sampler call (``None`` = all at once).
        sampler: the sampler of the samples (``None``: the model's).
        on_train_end: score the final model when training ends, unless its last step was scored (logged to the
            loggers directly: Lightning allows no ``log`` there).
    """

    def __init__(
        self,
        num_samples: int = 1000,
        every_n_epochs: int = 1,
        seed: int = 0,
        num_projections: int = 256,
        batch_size: int | None = None,
        sampler: Sampler | None = None,
        on_train_end: bool = True,
    ) -> None:
        super().__init__()
        if num_samples < 2:
            raise ValueError(f"ToySampleQuality.num_samples must be >= 2, got {num_samples}.")
        self.schedule = EvalSchedule("ToySampleQuality", every_n_epochs, on_train_end=on_train_end,
                                     epochs_required=True)  # fmt: skip
        if num_projections < 1 or (batch_size is not None and batch_size < 1):
            raise ValueError("ToySampleQuality.num_projections and batch_size must be >= 1.")
        self.num_samples = num_samples
        self.seed = seed
        self.num_projections = num_projections
        self.batch_size = batch_size
        self.sampler = sampler
        self.last_results: dict[str, float] = {}
        self._last_step = -1  # the global step of the last evaluation in this fit

    @staticmethod
    def _distribution(trainer: pl.Trainer) -> GaussianMixture:
        datamodule = trainer.datamodule
        distribution = datamodule.distribution if isinstance(datamodule, KnownDensity) else None
        if not isinstance(distribution, GaussianMixture):
            raise ValueError(
                "ToySampleQuality compares samples with the data's known distribution: it needs a DataModule with a "
                f"GaussianMixture `distribution` (ncsn_pl.data.ToyDataModule), got {type(trainer.datamodule).__name__}."
            )
        return distribution

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage in ("fit", "validate"):
            self._distribution(trainer)  # fail when the run starts, not at the first validation
        self._last_step = -1

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run:
            return
        if not self.schedule.by_epoch(trainer.current_epoch) and trainer.state.fn == "fit":
            return
        results = self.evaluate(trainer, ema_at_validation_epoch_end(trainer, pl_module, self))
        self._last_step = trainer.global_step
        for name, value in results.items():
            pl_module.log(f"val/{name}", value, prog_bar=name == "sliced_wasserstein")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.schedule.at_train_end(trainer.global_step, self._last_step) or trainer.fast_dev_run:
            return
        results = self.evaluate(trainer, averaged_module(trainer, pl_module))
        self._last_step = trainer.global_step
        for logger in trainer.loggers:
            logger.log_metrics({f"val/{name}": value for name, value in results.items()}, step=trainer.global_step)

    def evaluate(self, trainer: pl.Trainer, model: pl.LightningModule) -> dict[str, float]:
        """Draw the samples with ``model`` and return ``{"sliced_wasserstein": ..., "mode_weight_error": ...}``."""
        distribution = self._distribution(trainer)
        start = time.perf_counter()
        try:
            with torch.inference_mode():
                samples = model.sample(self.num_samples, seed=self.seed, sampler=self.sampler,
                                       batch_size=self.batch_size).cpu()
        except FloatingPointError as error:  # a diverged sampler is the worst schedule, not a crashed run
            log.warning("ToySampleQuality: %s", error)
            samples = torch.full((self.num_samples, distribution.dim), math.nan)
        exact = distribution.sample(self.num_samples, generator=torch.Generator().manual_seed(step_seed(self.seed, 1)))
        projections = torch.Generator().manual_seed(step_seed(self.seed, 2))
        results = {
            "sliced_wasserstein": float(sliced_wasserstein(samples, exact, self.num_projections, projections)),
            "mode_weight_error": float(mode_weight_error(samples, distribution)),
        }
        self.last_results = results
        if trainer.is_global_zero:
            record = {"epoch": trainer.current_epoch, "step": trainer.global_step, **results,
                      "num_samples": self.num_samples, "seconds": round(time.perf_counter() - start, 3)}
            append_step_record(run_dir(trainer) / SAMPLE_QUALITY_RECORDS, record)
        return results
