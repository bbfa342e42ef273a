"""Training batches a resumed run sees exactly as an uninterrupted one: a shuffle that depends only on (seed, epoch),
and a loader that resumes mid-epoch."""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler

__all__ = ["EpochShuffleSampler", "ResumableLoader"]


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


class ResumableLoader(DataLoader):
    """A ``DataLoader`` that resumes mid-epoch: its state is the number of batches of the current epoch already
    yielded, and that epoch. Lightning saves it in checkpoints (``state_dict``) and hands it back on resume
    (``load_state_dict``); the next pass over the loader, if it is of the same epoch, then skips those batches, so a
    run preempted mid-epoch continues with the batch it would have seen next (a pass of a later epoch skips none).
    (The skipped batches are read and dropped, so it works with any sampler, the distributed one included.)"""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._yielded = 0
        self._skip: tuple[int, int | None] = (0, None)  # (batches, the epoch they belong to)

    def _epoch(self) -> int | None:
        """The epoch the sampler was last set to (Lightning sets it before each pass), if it has one."""
        epoch = getattr(self.sampler, "epoch", None)
        return int(epoch) if isinstance(epoch, int) else None

    def __iter__(self) -> Iterator[Any]:
        (skip, epoch), self._skip = self._skip, (0, None)
        if epoch is not None and epoch != self._epoch():
            skip = 0  # the saved position belongs to an epoch that has ended: this pass starts a new one
        self._yielded = 0
        for batch in super().__iter__():
            self._yielded += 1
            if self._yielded > skip:
                yield batch

    def state_dict(self) -> dict[str, int | None]:
        return {"batches": self._yielded, "epoch": self._epoch()}

    def load_state_dict(self, state: dict[str, int | None]) -> None:
        epoch = state.get("epoch")
        self._skip = (int(state.get("batches") or 0), int(epoch) if epoch is not None else None)
