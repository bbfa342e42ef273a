"""The EMA of the weights (NCSNv2 Technique 5) with its warm-up, and which module holds the EMA weights that samples
and FID are drawn with."""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, WeightAveraging

from ncsn_pl.compat import averaged_model
from ncsn_pl.core.averaging import warmup_ema_update

__all__ = ["EMAWithWarmup", "averaged_module", "ema_at_validation_epoch_end"]


def averaged_module(trainer: pl.Trainer | None, pl_module: pl.LightningModule) -> pl.LightningModule:
    """The EMA copy of ``pl_module`` kept by a ``WeightAveraging`` callback (e.g. ``EMAWeightAveraging``), else
    ``pl_module`` itself.

    Outside validation this makes sampling independent of the callbacks' order. Inside a validation epoch the
    averaging callback has *swapped* the weights (``pl_module`` holds the EMA ones, the copy the raw ones, from
    its ``on_validation_epoch_start`` to its ``on_validation_epoch_end``); there use
    :func:`ema_at_validation_epoch_end`.
    """
    averaging = _weight_averaging(trainer)
    return averaged_model(averaging).module if averaging is not None else pl_module


def ema_at_validation_epoch_end(
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
    return averaged_model(averaging).module if swapped_back else pl_module


def _weight_averaging(trainer: pl.Trainer | None) -> WeightAveraging | None:
    for callback in trainer.callbacks if trainer is not None else []:
        if isinstance(callback, WeightAveraging) and averaged_model(callback) is not None:
            return callback
    return None


class EMAWithWarmup(WeightAveraging):
    """The exponential moving average of the weights (NCSNv2's Technique 5) with the usual warm-up of the decay,
    ``min(decay, (1 + n) / (10 + n))`` at the ``n``-th update (:func:`ncsn_pl.core.averaging.ema_decay`); Lightning's
    ``EMAWeightAveraging`` otherwise (checkpoints, validation and samples with the averaged weights).

    Without the warm-up an average with decay 0.999 still holds 22 % of the random initialisation after 1,500
    steps (``0.999 ** 1500``), which the samples of a short run show; with it, none after a few hundred.

    Args:
        decay: the decay after the warm-up (0.999 in NCSNv2).
        warmup: apply the warm-up (``false``: the official NCSNv2 code's plain EMA).
        update_every_n_steps: update the average after every ``n``-th optimizer step.
        update_starting_at_step: the first optimizer step (0-based) to update the average at (default: the first).
        device: keep the average on this device (default: the model's).
        use_buffers: average the buffers too.
    """

    def __init__(
        self,
        decay: float = 0.999,
        warmup: bool = True,
        update_every_n_steps: int = 1,
        update_starting_at_step: int | None = None,
        device: str | None = None,
        use_buffers: bool = True,
    ) -> None:
        if update_every_n_steps < 1:
            raise ValueError(f"update_every_n_steps must be >= 1, got {update_every_n_steps}.")
        super().__init__(device=device, use_buffers=use_buffers, multi_avg_fn=warmup_ema_update(decay, warmup))
        self.decay = decay
        self.warmup = warmup
        self.update_every_n_steps = update_every_n_steps
        self.update_starting_at_step = update_starting_at_step

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        """After every ``update_every_n_steps``-th optimizer step from ``update_starting_at_step`` on."""
        if step_idx is None:
            return False
        started = self.update_starting_at_step is None or step_idx >= self.update_starting_at_step
        return started and step_idx % self.update_every_n_steps == 0
