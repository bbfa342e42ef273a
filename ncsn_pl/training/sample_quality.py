"""FID (and KID, Inception Score, precision and recall) during training: when to score the model's samples and where
the numbers go, with what they were computed from."""

from __future__ import annotations

import time

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.model_helpers import is_overridden

from ncsn_pl.core.samplers import NFECount, Sampler, describe_sampler
from ncsn_pl.core.seeding import shard_indices
from ncsn_pl.metrics import QualityOptions, SampleQuality, read_reference_stats, real_images
from ncsn_pl.runs.step_records import SAMPLE_QUALITY_RECORDS, append_step_record
from ncsn_pl.runs.wandb_glue import log_config, run_dir
from ncsn_pl.training.ema import averaged_module, ema_at_validation_epoch_end
from ncsn_pl.training.progress import sampling_progress
from ncsn_pl.training.schedule import EvalSchedule

__all__ = ["SampleQualityMonitor"]


class SampleQualityMonitor(Callback):
    """FID (and KID, Inception Score, improved precision and recall) of samples drawn during training, logged as
    ``val/fid``, ``val/kid``, ``val/is``, ``val/precision``, ``val/recall``, with what they were computed from:
    ``val/fid_num_samples``, ``val/fid_num_real`` and ``val/nfe``.

    At the end of a validation run (or, when the run has no validation, at the end of a training epoch or step)
    the model draws ``num_samples`` samples, split over all processes: sample ``k`` is seeded with
    ``step_seed(seed, k)`` and rank ``r`` of ``W`` draws ``k = r, r + W, ...``, so the sample set and the FID do
    not depend on the number of processes. The EMA weights are used when an ``EMAWeightAveraging`` callback is
    present. The metrics are :class:`~ncsn_pl.metrics.SampleQuality`'s (torchmetrics, TF-FID settings, offline
    Inception weights) against the first ``num_real`` images of ``split`` (by default the training data); their
    statistics are cached on disk, keyed by data set, split, data settings, count and feature extractor (or taken
    from a paper's reference file, ``ref_stats``). Every value is also appended to
    ``<run dir>/sample_quality.jsonl`` with the counts, the sampler's settings and NFE, the feature extractor and
    the real statistics' source; W&B runs get those in their config under ``sample_quality``. A sampler whose NFE
    differs per sample (``AdaptiveVESDE``) logs its mean as ``val/nfe`` and its largest as ``val/nfe_max``.
    Precision and recall (``quality: {precision_recall: true}``; Kynkäänniemi et al. 2019) say whether a worse FID
    comes from worse samples (precision) or from missing modes (recall).

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
        batch_size: samples per sampler call on each process.
        seed: sample ``k`` is seeded with ``step_seed(seed, k)``.
        num_real: real images in the statistics, the first of ``split`` (``None`` = all).
        split: the real images: ``train`` (NCSNv2's fast FID) or ``val`` (the held-out split: the official test
            set of MNIST, Fashion-MNIST and CIFAR-10).
        ref_stats: a reference statistics file (``.npz``: pytorch-fid / TTUR ``mu``, ``sigma`` or score_sde
            ``pool_3``), or a published one by name (``cifar10-train``; :mod:`ncsn_pl.metrics.published_stats`), to
            compare with instead of the training images, for numbers comparable with a paper's.
        sampler: the sampler of the samples (``None``: the model's); its network evaluations per sample are logged
            as ``val/nfe`` and recorded with each FID.
        quality: the metrics and their feature extractor.
        progress_bar: show a ``levels x steps`` progress bar on rank 0 while sampling.
    """

    def __init__(
        self,
        num_samples: int = 1000,
        every_n_epochs: int = 1,
        every_n_steps: int = 0,
        on_train_end: bool = False,
        batch_size: int = 100,
        seed: int = 0,
        num_real: int | None = None,
        split: str = "train",
        ref_stats: str | None = None,
        sampler: Sampler | None = None,
        quality: QualityOptions = QualityOptions(),
        progress_bar: bool = True,
    ) -> None:
        super().__init__()
        quality.check_sample_count(num_samples, owner="SampleQualityMonitor")
        self.schedule = EvalSchedule("SampleQualityMonitor", every_n_epochs, every_n_steps, on_train_end, off="off")
        if batch_size < 1:
            raise ValueError(f"SampleQualityMonitor.batch_size must be >= 1, got {batch_size}.")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        if split not in ("train", "val"):
            raise ValueError(f"SampleQualityMonitor.split must be 'train' or 'val' (the test split), got {split!r}.")
        self.num_real = num_real
        self.split = split
        self.ref_stats = ref_stats
        self.sampler = sampler
        # fails when the run is configured, not after the first epoch; lists the ways to get the weights
        self.options = quality.with_resolved_weights()
        if ref_stats:  # a file (or name) that cannot serve these metrics fails here too; a named one is downloaded
            read_reference_stats(ref_stats, self.options)
        self.progress_bar = progress_bar
        self.quality: SampleQuality | None = None  # built at the first evaluation
        self._real_loaded = False
        self._last_step = -1
        self._last_epoch = -1
        self.last_results: dict[str, float] = {}

    # ------------------------------------------------------------------ set-up
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage not in ("fit", "validate"):
            return
        if self.quality is not None:
            # fresh states: under ddp_spawn, mp.spawn moves pickled CPU tensors into memory the processes share
            self.quality.reset(real=True)
            self.quality.to(pl_module.device)
        self._real_loaded = False
        self._last_step, self._last_epoch = -1, -1

    def _prepare(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> SampleQuality:
        """Build the metrics in the process that uses them, and get the real statistics from the cache or the
        training data (collective: every rank calls it)."""
        if self.quality is None:
            self.quality = SampleQuality(self.options, device=pl_module.device)
        if not self._real_loaded and self.ref_stats:
            self.quality.use_reference_stats(self.ref_stats)
            self._real_loaded = True
        if not self._real_loaded:
            if trainer.datamodule is None:
                raise ValueError(
                    "SampleQualityMonitor reads the real images from the DataModule; pass one to the Trainer (the "
                    "CLI always does)."
                )
            real = real_images(trainer.datamodule, self.split, self.num_real)
            rank, world = trainer.global_rank, trainer.world_size
            self.quality.load_or_compute_real(lambda: real.shard(rank, world, self.batch_size), **real.cache_key())
            self._real_loaded = True
        return self.quality

    # ------------------------------------------------------------------ when
    def _due(self, trainer: pl.Trainer) -> bool:
        if trainer.fast_dev_run:
            return False
        return self.schedule.due(trainer.global_step, trainer.current_epoch, self._last_step, self._last_epoch)

    @staticmethod
    def _validates(trainer: pl.Trainer, pl_module: pl.LightningModule) -> bool:
        """Whether this fit runs a validation loop at all."""
        return trainer.limit_val_batches != 0 and is_overridden("validation_step", pl_module)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if trainer.fast_dev_run:
            return  # a smoke run: no sampling, no Inception (as Lightning suppresses logging and checkpoints)
        if trainer.state.fn == TrainerFn.VALIDATING or (trainer.state.fn == TrainerFn.FITTING and self._due(trainer)):
            self._evaluate_and_log(trainer, pl_module, ema_at_validation_epoch_end(trainer, pl_module, self))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._validates(trainer, pl_module) and self._due(trainer):
            self._evaluate_and_log(trainer, pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: object) -> None:
        if self.schedule.every_n_steps and not self._validates(trainer, pl_module) and self._due(trainer):
            self._evaluate_and_log(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.schedule.at_train_end(trainer.global_step, self._last_step) and not trainer.fast_dev_run:
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

    @staticmethod
    def _nfe(trainer: pl.Trainer, fixed: int | None, counted: NFECount) -> dict[str, float]:
        """``nfe``, or where it differs per sample its mean and largest over all ranks' samples (collective)."""
        if fixed is not None:
            return {"nfe": fixed}
        per_sample = counted.per_sample.double()
        device = trainer.strategy.root_device
        total = trainer.strategy.reduce(torch.stack([per_sample.sum(), torch.tensor(float(per_sample.numel()))])
                                        .to(device), reduce_op="sum")  # fmt: skip
        largest = trainer.strategy.all_gather(per_sample.max() if per_sample.numel() else torch.tensor(0.0))
        return {"nfe": (total[0] / total[1].clamp(min=1)).item(), "nfe_max": largest.max().item()}

    def evaluate(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, model: pl.LightningModule | None = None
    ) -> dict[str, float]:
        """Draw this rank's share of the samples and return the metrics over all ranks (collective).

        ``model`` defaults to the EMA copy when there is one (:func:`averaged_module`), else ``pl_module``.
        """
        quality = self._prepare(trainer, pl_module)
        model = model if model is not None else averaged_module(trainer, pl_module)
        sampler = model.resolve_sampler(self.sampler)
        indices = list(shard_indices(self.num_samples, trainer.global_rank, trainer.world_size))
        show = self.progress_bar and trainer.progress_bar_callback is not None and trainer.is_global_zero
        start = time.perf_counter()
        quality.reset()
        counted = NFECount()
        with sampling_progress(model.num_scales, sampler, len(indices), self.batch_size, "FID samples", show) as bar:
            for first in range(0, len(indices), self.batch_size):
                batch = indices[first : first + self.batch_size]
                with torch.inference_mode(), trainer.precision_plugin.forward_context():
                    samples = model.sample(batch, seed=self.seed, sampler=sampler, callback=bar, nfe_count=counted)
                quality.update_fake(samples.float().clone())
        real = quality.real_source or {}
        counts = {"fid_num_samples": self.num_samples}
        if real.get("num_images") is not None:
            counts["fid_num_real"] = real["num_images"]
        results = {**quality.compute(), **self._nfe(trainer, sampler.nfe(model.num_scales), counted), **counts}
        self._last_step, self._last_epoch = trainer.global_step, trainer.current_epoch
        self.last_results = results
        if trainer.is_global_zero:
            described = {
                "num_samples": self.num_samples,
                "num_real": real.get("num_images"),
                "real": real,
                "sampler": {"seed": self.seed, **describe_sampler(sampler),
                            **{k: v for k, v in results.items() if k in ("nfe", "nfe_max")}},  # fmt: skip
                "feature_extractor": quality.feature_extractor_id,
                "resize": quality.resize,
            }
            record = {"epoch": trainer.current_epoch, "step": trainer.global_step,
                      **{k: v for k, v in results.items() if k not in counts}, **described,
                      "seconds": round(time.perf_counter() - start, 3)}  # fmt: skip
            append_step_record(run_dir(trainer) / SAMPLE_QUALITY_RECORDS, record)
            log_config(trainer.loggers, {"sample_quality": described})  # W&B: the strings metrics cannot hold
        return results
