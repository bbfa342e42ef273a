"""Pictures to the loggers that take them: W&B (``log_image``) and TensorBoard (``add_image``)."""

from __future__ import annotations

from collections.abc import Iterable

from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor

__all__ = ["log_image"]


def log_image(loggers: Iterable[object], key: str, image: Tensor, caption: str, step: int) -> int:
    """Log one picture ``(C, H, W)`` in [0, 1] to every logger that takes images; returns how many took it.

    ``WandbLogger`` (and any logger with ``log_image``) gets it with its caption; ``TensorBoardLogger`` through its
    ``SummaryWriter.add_image`` under ``key`` at ``step``. Others (CSV) are skipped.
    """
    count = 0
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, image, global_step=step, dataformats="CHW")
        elif callable(getattr(logger, "log_image", None)):
            logger.log_image(key=key, images=[image], caption=[caption], step=step)
        else:
            continue
        count += 1
    return count
