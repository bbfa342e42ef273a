"""Where a run writes (its versioned folder) and what it tells Weights & Biases about itself."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.loggers import WandbLogger

__all__ = ["log_config", "run_dir"]


def run_dir(trainer: pl.Trainer) -> Path:
    """The folder of this run: the first logger's versioned ``log_dir``, else ``default_root_dir``."""
    for logger in trainer.loggers:
        log_dir = getattr(logger, "log_dir", None)
        if log_dir and not isinstance(logger, WandbLogger):
            return Path(log_dir)
    return Path(trainer.default_root_dir)


def log_config(loggers: Iterable[object], config: Mapping[str, Any]) -> int:
    """Put the whole resolved, nested run config into the config of every W&B run among ``loggers``.

    W&B shows nested dicts with dotted names, so ``{"model": {"sigma_max": 1.0}}`` appears as
    ``model.sigma_max``: the same key a sweep file sets. Call it on global rank 0 only (where
    ``WandbLogger.experiment`` is a real run). Works in offline and disabled mode.

    Args:
        loggers: the Trainer's loggers; those that are not ``WandbLogger`` are skipped.
        config: the resolved config (plain, JSON-serialisable values).

    Returns:
        How many W&B runs were updated.
    """
    runs = 0
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.config.update(dict(config), allow_val_change=True)
            runs += 1
    return runs
