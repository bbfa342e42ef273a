"""The LightningModule: thin glue between the pure core (schedule, loss, sampler) and Lightning."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from ncsn_pl.compat import given_hyperparameters
from ncsn_pl.core.losses import dsm_loss, spread_levels
from ncsn_pl.core.samplers import (
    AnnealedLangevin,
    LangevinCallback,
    NFECount,
    RangeWatch,
    Sampler,
    check_sampler,
    seeded_sample,
)
from ncsn_pl.core.scores import AnyScoreFn, sigma_scaled_score
from ncsn_pl.core.seeding import PerSampleNoise, sample_seeds, step_seed
from ncsn_pl.core.sigmas import AUTO, geometric_sigmas, langevin_step_lr, resolve_auto_schedule
from ncsn_pl.data.contract import split_reader
from ncsn_pl.networks import ScoreNetwork
from ncsn_pl.system.errors import raised_on_every_rank
from ncsn_pl.training.divergence import LossDivergenceWatch
from ncsn_pl.training.optimizers import DEFAULT_ADAM, adam_settings, make_optimizers, optimizer_settings
from ncsn_pl.training.process_group import destroy_process_group_at_exit

__all__ = ["ScoreModel"]

log = logging.getLogger(__name__)


class ScoreModel(pl.LightningModule):
    """A noise conditional score model trained by denoising score matching and sampled by annealed Langevin.

    The schedule is ``geometric_sigmas(sigma_max, sigma_min, num_scales)`` (a buffer, saved in checkpoints).
    ``"auto"`` applies NCSNv2's rules to the training data when fitting starts: ``sigma_max`` = the largest
    pairwise distance (Technique 1), ``num_scales`` from the ratio rule (Technique 2), ``step_lr`` from the
    variance rule for ``n_steps_each`` (Technique 4; at construction when the schedule is given as numbers). The
    resolved numbers replace ``"auto"`` in the hyperparameters, so checkpoints hold them.

    Args:
        score_net: the score network, ``score_net(x, levels)`` (``ncsn_pl.networks.NCSN``, ``NCSNv2``, ...); it is
            given the schedule and checks the data shape here, before anything else is built.
        sigma_max: the largest sigma (NCSN's ``sigma_begin``), or ``"auto"``.
        sigma_min: the smallest sigma (NCSN's ``sigma_end``).
        num_scales: the number of noise levels L, or ``"auto"``.
        anneal_power: the loss weight lambda(sigma) = sigma^anneal_power (2 in both papers).
        lr: Adam's learning rate (1e-3 in NCSN, 1e-4 in NCSNv2); ``lr``, ``betas``, ``eps`` and ``weight_decay`` are
            not used when ``optimizer`` is given.
        betas: Adam's betas.
        eps: Adam's epsilon (1e-8; NCSNv2's FFHQ used 1e-3).
        weight_decay: Adam's weight decay.
        n_steps_each: T, Langevin steps per noise level when sampling (100 in NCSN).
        step_lr: epsilon of annealed Langevin dynamics in the official code's convention, or ``"auto"``.
        denoise: apply NCSNv2's final denoising step when sampling.
        sampler: another sampler than annealed Langevin with the three settings above, chosen by ``class_path``
            (``ncsn_pl.core.samplers.ConsistentAnnealed``, ``PredictorCorrector``, ``ProbabilityFlowODE``); it
            draws the sample grids, the FID samples and the ``sample`` / ``fid`` commands' samples. Its ``"auto"``
            step sizes are computed for this model's schedule when it samples.
        init_range: samples start uniform on ``[low, high]`` (NCSN: U[0, 1] for images).
        data_shape: the shape of one data item, e.g. ``(1, 28, 28)``; linked from the DataModule by the CLI.
        seed: seeds the noise of training (keyed by step, rank and micro-batch: resumable) and of validation (keyed by
            the validation item, whatever the batch size or the number of processes).
        auto_max_items: training items read by the ``"auto"`` rules (the distance is exact up to 10,000).
        channels_last: keep the network's 4-D weights in ``torch.channels_last`` memory format; convolutions then
            run and return channels_last, which is faster (README, "Speed").
            The scores are the same up to float rounding.
        compile: compile the score network with ``torch.compile(fullgraph=True)`` for training and sampling (the
            first calls take minutes, later ones run faster; README, "Speed"). The module is compiled in place, so
            the state dict and checkpoints are those of the eager network and load either way.
        optimizer: another optimizer than Adam, as ``{"class_path": ..., "init_args": ...}``; the CLI fills it from
            ``--optimizer`` (e.g. ``--optimizer AdamW --optimizer.lr 2e-4``).
        lr_scheduler: a learning-rate schedule (``--lr_scheduler``, e.g. ``--lr_scheduler CosineAnnealingLR
            --lr_scheduler.T_max 200000``), stepped after every optimizer step; None: a constant rate.
    """

    def __init__(
        self,
        score_net: ScoreNetwork,
        sigma_max: float | Literal["auto"] = 1.0,
        sigma_min: float = 0.01,
        num_scales: int | Literal["auto"] = 10,
        anneal_power: float = 2.0,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        n_steps_each: int = 100,
        step_lr: float | Literal["auto"] = 2e-5,
        denoise: bool = False,
        sampler: Sampler | None = None,
        init_range: tuple[float, float] = (0.0, 1.0),
        data_shape: Sequence[int] | None = None,
        seed: int = 0,
        auto_max_items: int = 10_000,
        channels_last: bool = True,
        compile: bool = False,
        optimizer: dict[str, Any] | None = None,
        lr_scheduler: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("sigma_max", sigma_max), ("num_scales", num_scales), ("step_lr", step_lr)):
            if isinstance(value, str) and value != AUTO:
                raise ValueError(f"model.{name} must be a number or 'auto', got {value!r}.")
        if n_steps_each < 1:
            raise ValueError(f"model.n_steps_each must be >= 1, got {n_steps_each}.")
        if not isinstance(step_lr, str) and not step_lr > 0:
            raise ValueError(f"model.step_lr must be positive or 'auto', got {step_lr}.")
        # Adam's own checks (torch.optim.Adam) would fire at the first step, after the run folder is made
        if not lr >= 0:
            raise ValueError(f"model.lr must be >= 0 (Adam's learning rate), got {lr}.")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"model.betas must be two numbers in [0, 1), got {tuple(betas)}.")
        if not (eps >= 0 and weight_decay >= 0):
            raise ValueError(f"model.eps and model.weight_decay must be >= 0, got {eps} and {weight_decay}.")
        if not init_range[0] < init_range[1]:
            raise ValueError(f"model.init_range must be (low, high) with low < high, got {init_range}.")
        if optimizer and adam_settings(dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)) != DEFAULT_ADAM:
            rank_zero_warn(f"model.lr, model.betas, model.eps and model.weight_decay are not used: the optimizer is "
                           f"{optimizer.get('class_path')} with its own settings (--optimizer.*).")  # fmt: skip
        # under LightningCLI the network's config (class_path, init_args) is saved; a bare module is not
        self.save_hyperparameters(ignore=None if given_hyperparameters() is not None else ["score_net"])
        self.score_net = score_net.to(memory_format=torch.channels_last) if channels_last else score_net
        self.data_shape = tuple(data_shape) if data_shape is not None else None
        self.sampler = sampler
        self._warned_range = False
        if compile:
            self.score_net.compile(fullgraph=True)  # in place: the state dict keeps the eager keys
        check_data_shape = getattr(score_net, "check_data_shape", None)
        if self.data_shape is not None and callable(check_data_shape):
            check_data_shape(self.data_shape)
        self.sigmas: Tensor
        self.register_buffer("sigmas", torch.empty(0))
        self.divergence, self._checked_step = LossDivergenceWatch(), -1
        if AUTO not in (sigma_max, num_scales):
            self._install_schedule(geometric_sigmas(float(sigma_max), sigma_min, int(num_scales)))
            if step_lr == AUTO:  # Technique 4 needs the schedule only
                self.hparams.step_lr = langevin_step_lr(self.sigmas, n_steps_each)
            if sampler is not None:  # a sampler that cannot run with this network stops the run here
                check_sampler(sampler, self.score_fn, self.sigmas)

    # ------------------------------------------------------------------ schedule
    @property
    def schedule_is_auto(self) -> bool:
        """Whether any of ``sigma_max``, ``num_scales`` or ``step_lr`` waits for the data."""
        return AUTO in (self.hparams.sigma_max, self.hparams.num_scales, self.hparams.step_lr)

    @property
    def num_scales(self) -> int:
        return int(self.sigmas.numel())

    def _install_schedule(self, sigmas: Tensor) -> None:
        """Use ``sigmas`` here and give them to the network (NCSNv2 divides by them; NCSN checks their count)."""
        self.sigmas = sigmas.to(self.sigmas.device)
        set_sigmas = getattr(self.score_net, "set_sigmas", None)
        if callable(set_sigmas):
            set_sigmas(self.sigmas)

    def resolve_auto_schedule(self, datamodule: object) -> dict[str, float]:
        """Apply NCSNv2's rules to the training data of ``datamodule`` for every ``"auto"`` setting.

        The one place ``"auto"`` is resolved: the CLI calls it as soon as the model and the data exist (before a
        callback copies the model for EMA, and so the saved config holds the numbers); :meth:`setup` calls it for
        a model fitted from Python. Returns the resolved settings (empty when nothing is ``"auto"``).
        """
        if not self.schedule_is_auto:
            return {}
        if split_reader(datamodule, "train") is None:  # no TrainData (ncsn_pl.data.contract)
            raise ValueError("'auto' schedule settings need a DataModule with train_data(); give numbers instead.")
        datamodule.setup("fit")
        hp = self.hparams
        resolved = resolve_auto_schedule(
            datamodule.train_data(hp.auto_max_items),
            sigma_max=hp.sigma_max,
            sigma_min=hp.sigma_min,
            num_scales=hp.num_scales,
            step_lr=hp.step_lr,
            n_steps_each=hp.n_steps_each,
        )
        self.hparams.update(resolved)
        self._install_schedule(geometric_sigmas(float(hp.sigma_max), hp.sigma_min, int(hp.num_scales)))
        log.info("NCSNv2 rules applied to the training data: %s", resolved)
        return resolved

    def setup(self, stage: str) -> None:
        destroy_process_group_at_exit()  # each process of a multi-process run, once its group exists
        self.resolve_auto_schedule(self.trainer.datamodule if self.trainer is not None else None)

    # ------------------------------------------------------------------ training
    def forward(self, x: Tensor, levels: Tensor) -> Tensor:
        """The score ``s(x, levels)``."""
        return self.score_net(x, levels)

    def _attached(self) -> bool:
        """Whether a Trainer runs this module (``self.trainer`` raises otherwise)."""
        try:
            return self.trainer is not None
        except RuntimeError:
            return False

    def _generator(self, *counters: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(step_seed(self.hparams.seed, *counters))

    def _noise_counters(self, batch_idx: int) -> tuple[int, ...]:
        """What keys a training batch's levels and noise: ``(0, step, rank)``, plus the micro-batch's place in the
        step under ``trainer.accumulate_grad_batches`` (the first keeps the key of a run without accumulation)."""
        micro = batch_idx % self.trainer.accumulate_grad_batches if self._attached() else 0
        return (0, self.global_step, self.global_rank) + ((micro,) if micro else ())

    def training_step(self, batch: Tensor | Sequence[Tensor], batch_idx: int) -> Tensor:
        x = _images(batch)
        generator = self._generator(*self._noise_counters(batch_idx))
        losses = dsm_loss(self.score_net, x, self.sigmas, anneal_power=self.hparams.anneal_power, generator=generator)
        loss = losses.mean()
        self.divergence.note(losses, self.global_step)  # read only at checks: no host sync per step
        self.log("train/loss", loss, prog_bar=True, batch_size=x.shape[0])
        return loss

    def stop_if_diverged(self) -> None:
        """Collective, on every rank at the same step: stop all of them together when any rank has seen a NaN or
        infinite training loss since the start, with the step and the noise levels at fault (printed once).

        Called before every checkpoint is written (``ResumableCheckpoint``), every ``trainer.log_every_n_steps``
        steps and when training ends, so no checkpoint holds weights updated by a non-finite loss.
        """
        if self.trainer is None or self._checked_step == self.global_step:
            return
        self._checked_step = self.global_step

        def levels_of(step: int, size: int) -> Tensor:  # drawn again: the generator is keyed by the step and rank
            replay = self._generator(0, step, self.global_rank)
            return torch.randint(0, self.num_scales, (size,), device=self.device, generator=replay)

        found = self.divergence.check(self.trainer, levels_of, self.num_scales)
        if found is None:
            return
        step, bad = found
        sigmas = ", ".join(f"{self.sigmas[i].item():.4g}" for i in bad)
        raise raised_on_every_rank(FloatingPointError(
            f"Non-finite training loss at step {step}: noise level(s) {bad} (sigma {sigmas}). "
            f"Training stopped on every process; the last checkpoint written before this step is intact. Try a lower "
            f"model.lr, gradient clipping (trainer.gradient_clip_val) or check the data for NaN."
        ), self.global_rank)  # fmt: skip

    def on_train_batch_end(self, outputs: object, batch: object, batch_idx: int) -> None:
        if self.global_step % max(1, self.trainer.log_every_n_steps) == 0:
            self.stop_if_diverged()

    def on_train_end(self) -> None:
        self.stop_if_diverged()

    def validation_step(self, batch: Tensor | Sequence[Tensor], batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch: Tensor | Sequence[Tensor], batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "test")

    def _evaluate(self, batch: Tensor | Sequence[Tensor], batch_idx: int, stage: str) -> None:
        """The loss on fixed noise, keyed by each item's index ``k`` in the evaluation set: level
        ``spread_levels(k, L)`` (every ``L`` items cover all levels once) and noise seeded by ``(seed, 1, k)``. The
        items of a pass, and so its loss, are the same for any batch size or number of processes."""
        x = _images(batch)
        if batch_idx == 0:
            self._evaluated = 0
        offset = getattr(self, "_evaluated", 0)
        self._evaluated = offset + x.shape[0]
        # Lightning's DistributedSampler (not shuffled) gives rank r of W the items r, r + W, r + 2W, ...
        world_size = self.trainer.world_size if self._attached() else 1
        items = torch.arange(offset, offset + x.shape[0]) * world_size + self.global_rank
        levels = spread_levels(items, self.num_scales).to(x.device)
        seeds = [step_seed(self.hparams.seed, 1, k) for k in items.tolist()]
        noise = PerSampleNoise(seeds, device=x.device).randn(x.shape, dtype=x.dtype)
        losses = dsm_loss(
            self.score_net, x, self.sigmas, levels=levels, noise=noise, anneal_power=self.hparams.anneal_power
        )
        self.log(f"{stage}/loss", losses.mean(), prog_bar=stage == "val", batch_size=x.shape[0], sync_dist=True)
        # per group of levels: sums and counts, added over all processes at the end of the pass
        groups = _level_groups(self.num_scales)
        group_of = torch.cat([torch.full((last - first + 1,), g) for g, (first, last) in enumerate(groups)])
        index = group_of.to(x.device)[levels]
        if batch_idx == 0:
            self._level_sums = torch.zeros(2, len(groups), device=x.device)
        self._level_sums[0].index_add_(0, index, losses.detach().float())
        self._level_sums[1].index_add_(0, index, torch.ones_like(index, dtype=torch.float32))

    def _log_level_losses(self, stage: str) -> None:
        """Log ``stage/loss_level_i`` (or ``loss_levels_i-j``): the mean loss of the pass's items at those levels."""
        sums = getattr(self, "_level_sums", None)
        if sums is None:
            return
        self._level_sums = None
        sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
        for (first, last), total, count in zip(_level_groups(self.num_scales), *sums.tolist(), strict=True):
            if count:
                name = f"level_{first}" if first == last else f"levels_{first}-{last}"
                self.log(f"{stage}/loss_{name}", total / count, sync_dist=True)  # the same on every process

    def on_validation_epoch_end(self) -> None:
        self._log_level_losses("val")

    def on_test_epoch_end(self) -> None:
        self._log_level_losses("test")

    def on_train_start(self) -> None:
        """Use this run's optimizer settings also when the optimizer's state was restored from a checkpoint (a resumed
        run may change ``lr``, ``betas``, ``eps``, ``weight_decay``)."""
        settings = optimizer_settings(self.hparams)
        for optimizer in self.trainer.optimizers:
            for group in optimizer.param_groups:
                group.update({key: value for key, value in settings.items() if key in group})

    def configure_optimizers(self) -> Any:
        return make_optimizers(self.parameters(), self.hparams)

    # ------------------------------------------------------------------ sampling
    @property
    def score_fn(self) -> AnyScoreFn:
        """The network as the samplers call it: a sigma-conditioned score when the network divides by sigma
        (NCSNv2: ``net.unscaled(x) / sigma``, any grid), else the level-indexed ``score_net(x, levels)``."""
        unscaled = getattr(self.score_net, "unscaled", None)
        if not callable(unscaled):
            return self.score_net
        if self.hparams.get("compile"):  # Module.compile compiles forward only; dynamo caches by code object
            unscaled = torch.compile(unscaled, fullgraph=True)
        return sigma_scaled_score(unscaled)

    def resolve_sampler(self, sampler: Sampler | None = None) -> Sampler:
        """The sampler to draw with: ``sampler``, else the model's (``model.sampler``, else annealed Langevin with
        ``n_steps_each``, ``step_lr``, ``denoise``), after checking that the model can sample with it, with its
        ``"auto"`` step sizes computed for the model's schedule (:meth:`Sampler.resolve`), so records hold them.

        Raises:
            ValueError: the model does not know its data shape, its schedule is still ``"auto"``, or the sampler
                cannot run with this network and schedule (the message says which samplers or grids fit).
        """
        if self.data_shape is None:
            raise ValueError("The model does not know its data shape: set model.data_shape or train it first.")
        if self.schedule_is_auto:
            raise ValueError("The schedule is still 'auto': fit the model (or give numbers) before sampling.")
        hp = self.hparams
        sampler = sampler or self.sampler or AnnealedLangevin(int(hp.n_steps_each), float(hp.step_lr), bool(hp.denoise))
        check_sampler(sampler, self.score_fn, self.sigmas)
        return sampler.resolve(self.sigmas)

    @torch.no_grad()
    def sample(
        self,
        indices: int | Sequence[int],
        *,
        seed: int = 0,
        sampler: Sampler | None = None,
        batch_size: int | None = None,
        callback: LangevinCallback | None = None,
        nfe_count: NFECount | None = None,
    ) -> Tensor:
        """Samples ``k in indices`` (or ``range(indices)``), sample ``k`` seeded by ``step_seed(seed, k)``: the same
        whatever the batch size or the number of processes; ``nfe_count`` counts each one's network evaluations.

        The sampler is :meth:`resolve_sampler`'s (``sampler``, else the model's); samples start as it says
        (``U[init_range]`` for annealed Langevin). The network runs in eval mode; samples are not clamped (clamp to
        [0, 1] to display them).

        Raises:
            ValueError: the model cannot sample with this sampler (see :meth:`resolve_sampler`).
            FloatingPointError: sampling diverged; the message names the samples, the sampler, the level and step.
        """
        sampler = self.resolve_sampler(sampler)
        indices = list(range(indices)) if isinstance(indices, int) else [int(k) for k in indices]
        batch_size = batch_size or max(1, len(indices))
        was_training = self.score_net.training
        self.score_net.eval()
        batches = [torch.empty((0, *self.data_shape), device=self.sigmas.device, dtype=self.sigmas.dtype)]
        range_watch = RangeWatch(tuple(self.hparams.init_range), self.sigmas.device)
        try:
            for start in range(0, len(indices), batch_size):
                batch = indices[start : start + batch_size]
                seeds = sample_seeds(seed, batch)
                try:
                    batches.append(
                        seeded_sample(
                            sampler,
                            self.score_fn,
                            self.sigmas,
                            self.data_shape,
                            seeds,
                            init_range=tuple(self.hparams.init_range),
                            callback=callback,
                            range_watch=range_watch,
                            nfe_count=nfe_count,
                        )
                    )
                except FloatingPointError as err:
                    raise FloatingPointError(
                        f"{err} Samples {batch[0]}..{batch[-1]} (seed {seed}) were being drawn with {sampler}."
                    ) from err
        finally:
            self.score_net.train(was_training)
        # read once for all the batches, and say it once per model
        if not self._warned_range and (message := range_watch.message()) is not None:
            self._warned_range = True
            warnings.warn(f"{message} (seed {seed}, {sampler})", RuntimeWarning, stacklevel=3)
        return torch.cat(batches)


def _images(batch: Tensor | Sequence[Tensor]) -> Tensor:
    return batch[0] if isinstance(batch, (list, tuple)) else batch


def _level_groups(num_scales: int, max_groups: int = 10) -> list[tuple[int, int]]:
    """Split ``0 .. L-1`` into at most ``max_groups`` contiguous groups for per-level logging."""
    bounds = torch.linspace(0, num_scales, min(num_scales, max_groups) + 1).round().long().tolist()
    return [(bounds[i], bounds[i + 1] - 1) for i in range(len(bounds) - 1)]
