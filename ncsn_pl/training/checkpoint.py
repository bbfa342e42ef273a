"""Checkpoints a run can always resume from: ``last.ckpt`` up to the final step, and on an exception or SIGTERM."""

from __future__ import annotations

import logging
import signal
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import Tensor

from ncsn_pl.runs.wandb_glue import mark_wandb_preempting, wandb_run_of
from ncsn_pl.system.files import atomic_torch_save

__all__ = ["PREEMPTED_EXIT_CODE", "AtomicCheckpointIO", "ResumableCheckpoint"]

# a preempted run exits as a shell reports a process killed by SIGTERM (128 + 15), after writing its checkpoint
PREEMPTED_EXIT_CODE = 128 + signal.SIGTERM

log = logging.getLogger(__name__)

class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, staging each file in its own folder and renaming it into place
    (:func:`~ncsn_pl.system.files.atomic_torch_save`): a full disk or a kill never leaves a partial checkpoint under a
    final name. (Lightning's own writer stages in the system's temporary folder and moves the file across file
    systems, which is a copy.)"""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}.")
        atomic_torch_save(checkpoint, path)


class ResumableCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint``, writing a ``last.ckpt`` a run can always resume from.

    ``last.ckpt`` is kept up to the final step (also when the fit ends between validations) and also written on an
    exception or a SIGTERM (a preempted job), so ``--ckpt_path <run>/checkpoints/last.ckpt`` resumes the run; after a
    SIGTERM the run's W&B runs are marked as preempting.

    No checkpoint with non-finite weights is written, and none is deleted in favour of one: after a diverging
    update the periodic saves stop, and a diverged run (a non-finite loss) writes nothing on its way out; the error
    names the last checkpoint that holds finite weights. Files are written atomically (:class:`AtomicCheckpointIO`).
    All of ``ModelCheckpoint``'s arguments apply (``every_n_train_steps``, ``monitor``, ``save_top_k``, ...);
    ``save_last`` and ``save_on_exception`` default to true.
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
        self.last_good: tuple[str, int] | None = None  # (path, global step) of the last checkpoint written
        self._in_exception = False  # saving on the way out: no collective (another rank may have stopped)
        self._at_epoch_end = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()

    def _weights_finite(self, trainer: pl.Trainer) -> bool:
        finite = all(bool(torch.isfinite(p).all()) for p in trainer.lightning_module.parameters())
        if not finite and not getattr(self, "_warned_non_finite", False):
            self._warned_non_finite = True
            log.warning(
                "Step %d: the weights are no longer finite; no more checkpoints are written (%s).",
                trainer.global_step,
                self.describe_last_good(),
            )
        return finite

    def _check_divergence(self, trainer: pl.Trainer) -> None:
        """Before a save in the normal course of training (every rank calls it at the same step): stop every rank
        if any has seen a non-finite loss (``ScoreModel.stop_if_diverged``, a collective)."""
        stop_if_diverged = getattr(trainer.lightning_module, "stop_if_diverged", None)
        if callable(stop_if_diverged) and not self._in_exception:
            stop_if_diverged()

    def _save_topk_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict[str, Tensor]) -> None:
        self._check_divergence(trainer)
        if self._weights_finite(trainer):
            super()._save_topk_checkpoint(trainer, monitor_candidates)

    def _save_last_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict[str, Tensor]) -> None:
        # Lightning's own on_train_end saves last.ckpt even under fast_dev_run, which should write nothing
        if trainer.fast_dev_run:
            return
        self._check_divergence(trainer)
        if self.save_last and not self.last_model_path:  # resumed in a moved or copied folder: keep last.ckpt's name
            self.last_model_path = self.format_checkpoint_name(monitor_candidates, self.CHECKPOINT_NAME_LAST)
        if self._weights_finite(trainer):
            super()._save_last_checkpoint(trainer, monitor_candidates)

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        self.last_good = (filepath, trainer.global_step)

    def describe_last_good(self) -> str:
        """Where the last checkpoint with finite weights is, for messages."""
        if self.last_good is None:
            return "this run wrote no checkpoint before"
        path, step = self.last_good
        return f"the last checkpoint with finite weights is {path}, at step {step}"

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        """Lightning's periodic saves; and when this batch ends the fit in the middle of an epoch (``max_steps``,
        ``max_time`` or a callback's stop), ``last.ckpt`` now, while the loop's state still says "mid-epoch".
        Saved later, at the epoch's end, the state says the epoch was processed, and a run continued from it would
        draw the rest of the epoch in the next epoch's order (Lightning sets the shuffle's epoch to the processed
        epochs). At an epoch's last batch, :meth:`on_train_epoch_end` saves it."""
        super().on_train_batch_end(trainer, pl_module, *args)
        max_steps = trainer.max_steps
        stops = trainer.should_stop or (max_steps is not None and 0 <= max_steps <= trainer.global_step)
        epoch_ends = trainer.fit_loop.epoch_loop.batch_progress.current.ready >= trainer.num_training_batches
        if self.save_last and stops and not epoch_ends and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Also keep the final steps: when this epoch ends the fit (``max_time``, ``max_steps``, ``max_epochs`` or
        a callback's stop), ``last.ckpt`` gets the final weights even if no validation saved them. This runs before
        ``on_train_end``, where ``EMAWeightAveraging`` would replace the raw weights by the average."""
        self._at_epoch_end = True
        try:
            super().on_train_epoch_end(trainer, pl_module)
            if self.save_last and _fit_ends_after_this_epoch(trainer) and not self._should_skip_saving_checkpoint(
                trainer
            ):
                self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        finally:
            self._at_epoch_end = False

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
                           ) -> None:  # fmt: skip
        """A checkpoint written at an epoch's end records the epoch as completed (Lightning counts it completed only
        after the hook that writes it), so a run continued from it starts the next epoch, with the next epoch's
        order, as a run that never stopped does, however the fit ended (``max_steps`` on an epoch's last batch).
        It also names the run's W&B run (``wandb_run``: id, project, save_dir), for ``fid --wandb``."""
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        run = wandb_run_of(trainer.loggers)
        if run is not None:
            checkpoint["wandb_run"] = run
        loop = checkpoint.get("loops", {}).get("fit_loop", {})
        if not self._at_epoch_end or "epoch_progress" not in loop or "epoch_loop.batch_progress" not in loop:
            return
        for tracker in loop["epoch_progress"].values():
            tracker["completed"] = tracker["processed"]
        batches = loop["epoch_loop.batch_progress"]
        batches["current"] = {key: 0 for key in batches["current"]}
        batches["is_last_batch"] = False

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        """Save the state to resume from, unless the run diverged (its weights gave a non-finite loss)."""
        if isinstance(exception, FloatingPointError):
            if trainer.is_global_zero:
                log.error("Training diverged: no checkpoint written; %s.", self.describe_last_good())
            return
        self._in_exception = True
        try:
            if self._weights_finite(trainer):
                super().on_exception(trainer, pl_module, exception)
        finally:
            self._in_exception = False
        fitting = trainer.state.fn == TrainerFn.FITTING  # sample and fid say how to continue themselves
        if isinstance(exception, SIGTERMException) and fitting and trainer.is_global_zero:
            mark_wandb_preempting(trainer.loggers)
            log.warning(
                "Stopped by SIGTERM at step %d; resume with --ckpt_path %s (exit status %d).",
                trainer.global_step,
                self.last_model_path or "<no checkpoint>",
                PREEMPTED_EXIT_CODE,
            )


def _fit_ends_after_this_epoch(trainer: pl.Trainer) -> bool:
    """Whether the training epoch that is ending is the fit's last (called from ``on_train_epoch_end``)."""
    max_steps, max_epochs = trainer.max_steps, trainer.max_epochs
    return (
        trainer.should_stop
        or (max_steps is not None and max_steps >= 0 and trainer.global_step >= max_steps)
        or (max_epochs is not None and max_epochs >= 0 and trainer.current_epoch + 1 >= max_epochs)
    )
