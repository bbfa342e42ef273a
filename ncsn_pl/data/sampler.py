"""A shuffling sampler whose order depends only on (seed, epoch), so a resumed run sees the same batches."""

from __future__ import annotations

from collections.abc import Iterator, Sized

import torch
from torch.utils.data import Sampler

__all__ = ["EpochShuffleSampler"]


class EpochShuffleSampler(Sampler[int]):
    """Shuffle anew each epoch with a permutation seeded by ``(seed, epoch)``.

    Lightning calls ``set_epoch`` at the start of every epoch (as it does for ``DistributedSampler``, which
    replaces this sampler under DDP), so stopping and resuming a run replays the same order, unlike a
    ``RandomSampler`` that draws from the global random state.

    Args:
        data_source: the data set (only its length is used).
        seed: the base seed of the permutations.
    """

    def __init__(self, data_source: Sized, seed: int = 0) -> None:
        self.data_source = data_source
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.data_source)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(len(self.data_source), generator=generator).tolist())
