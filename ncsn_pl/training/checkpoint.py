"""Checkpoints a run can always resume from: ``last.ckpt`` up to the final step, and on an exception or SIGTERM."""

from __future__ import annotations

import logging
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

__all__ = ["ResumableCheckpoint"]

log = logging.getLogger(__name__)

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
