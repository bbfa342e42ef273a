"""The 2-D toy data of NCSN §3.2.2: fixed samples of a Gaussian mixture."""

from __future__ import annotations

from collections.abc import Sequence

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from ncsn_pl.core.distributions import GaussianMixture
from ncsn_pl.data.sampler import EpochShuffleSampler, ResumableLoader

__all__ = ["ToyDataModule"]


class ToyDataModule(pl.LightningDataModule):
    """Fixed training and validation sets drawn from ``GaussianMixture(weights, means, stds)``.

    The default is the paper's mixture ``p = 0.8 N((5, 5), I) + 0.2 N((-5, -5), I)`` (Song & Ermon 2019,
    §3.2.2; ermongroup/ncsn ``models/gmm.py``). Both sets are drawn once, in ``__init__``, from a generator
    seeded with ``seed`` (train first, then val), so they are the same on every rank and every run. Batches
    are plain float32 tensors ``(B, D)``.

    Args:
        weights: mixture weights, one per component (normalised to sum to 1).
        means: component means, shape ``(K, D)``.
        stds: per-component standard deviations, shape ``(K,)``.
        num_train: number of training samples.
        num_val: number of validation (and test) samples.
        batch_size: batch size of every loader.
        num_workers: DataLoader worker processes (0 is fastest for in-memory data).
        seed: seed of the generator the samples are drawn with.
    """

    def __init__(
        self,
        weights: Sequence[float] = (0.8, 0.2),
        means: Sequence[Sequence[float]] = ((5.0, 5.0), (-5.0, -5.0)),
        stds: Sequence[float] = (1.0, 1.0),
        num_train: int = 10000,
        num_val: int = 2000,
        batch_size: int = 128,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if num_train < 1 or num_val < 1:
            raise ValueError(f"data.num_train and data.num_val must be >= 1, got {num_train} and {num_val}.")
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}.")
        self.save_hyperparameters(logger=False)  # saved in checkpoints; the run config already holds them
        self.distribution = GaussianMixture(weights, means, stds)
        self.batch_size = batch_size
        self.num_workers = num_workers
        generator = torch.Generator().manual_seed(seed)
        self.train_set = self.distribution.sample(num_train, generator=generator)
        self.val_set = self.distribution.sample(num_val, generator=generator)

    @property
    def data_shape(self) -> tuple[int, ...]:
        """Shape of one data point, ``(D,)`` (``(2,)`` for the paper's mixture)."""
        return (self.distribution.dim,)

    def train_dataloader(self) -> DataLoader:
        return ResumableLoader(
            self.train_set,
            batch_size=self.batch_size,
            sampler=EpochShuffleSampler(self.train_set, self.hparams.seed),
            num_workers=self.num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size, num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def train_data(self, max_items: int | None = None) -> torch.Tensor:
        """The first ``max_items`` training samples (all if None), ``(N, D)``."""
        return self.train_set[:max_items].clone()

    def val_data(self, max_items: int | None = None) -> torch.Tensor:
        """The first ``max_items`` validation samples (all if None), ``(N, D)``."""
        return self.val_set[:max_items].clone()
