"""A folder of its own for a fit that logs nowhere on disk (``--trainer.logger=false``, or W&B alone).

Without a logger that has a folder, Lightning writes checkpoints to ``<default_root_dir>/checkpoints/`` and the
project writes the config and sample grids to ``<default_root_dir>/``: two such fits with the same root overwrite
each other's ``last.ckpt``, ``config.yaml`` and ``samples/final.png``. :class:`RunFolder` claims and locks a
``version_N/`` as :class:`~ncsn_pl.runs.logger.RunLogger` does, so those files go there and a resumed run
continues its folder, and it logs nothing.
"""

from __future__ import annotations

from argparse import Namespace
from collections.abc import Iterable
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from ncsn_pl.runs.logger import RunLogger

__all__ = ["RunFolder", "give_run_folder", "has_run_folder"]


class RunFolder(RunLogger):
    """A :class:`RunLogger` that writes no metrics and no hyperparameters: the run's ``version_N/`` alone (claimed,
    locked while the run lives, continued on resume)."""

    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        """Nothing is logged (the run's ``config.yaml`` holds the settings)."""

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Nothing is logged."""

    def save(self) -> None:
        """Nothing to write."""


def has_run_folder(loggers: Iterable[object]) -> bool:
    """Whether one of ``loggers`` gives the run a versioned folder on disk (a CSV or TensorBoard logger)."""
    return any(isinstance(logger, (CSVLogger, TensorBoardLogger)) for logger in loggers)


def give_run_folder(trainer: pl.Trainer) -> RunFolder | None:
    """Put a :class:`RunFolder` under ``trainer.default_root_dir`` first among the loggers of a fit whose loggers
    give it no folder (none, W&B alone, ...), so checkpoints, config and samples land in a ``version_N/`` of the
    run's own. Nothing changes under ``fast_dev_run``, which writes nothing. Returns the folder logger it added."""
    if trainer.fast_dev_run or has_run_folder(trainer.loggers):
        return None
    folder = RunFolder(trainer.default_root_dir)
    trainer.loggers = [folder, *trainer.loggers]
    return folder
