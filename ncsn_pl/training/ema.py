"""Which module holds the EMA weights (NCSNv2 Technique 5) that samples and FID are drawn with."""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, WeightAveraging

__all__ = ["averaged_module", "ema_at_validation_epoch_end"]


def averaged_module(trainer: pl.Trainer | None, pl_module: pl.LightningModule) -> pl.LightningModule:
    """The EMA copy of ``pl_module`` kept by a ``WeightAveraging`` callback (e.g. ``EMAWeightAveraging``), else
    ``pl_module`` itself.

    Outside validation this makes sampling independent of the callbacks' order. Inside a validation epoch the
    averaging callback has *swapped* the weights (``pl_module`` holds the EMA ones, the copy the raw ones, from
    its ``on_validation_epoch_start`` to its ``on_validation_epoch_end``); there use
    :func:`ema_at_validation_epoch_end`.
    """
    averaging = _weight_averaging(trainer)
    return averaging._average_model.module if averaging is not None else pl_module


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
    return averaging._average_model.module if swapped_back else pl_module


def _weight_averaging(trainer: pl.Trainer | None) -> WeightAveraging | None:
    for callback in trainer.callbacks if trainer is not None else []:
        if isinstance(callback, WeightAveraging) and callback._average_model is not None:
            return callback
    return None
