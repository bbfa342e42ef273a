"""The plumbing of the ``sample`` and ``fid`` jobs: each runs as a Lightning *predict* loop over item indices.

So they work on every accelerator and strategy the Trainer supports, DDP included: rank ``r`` of ``W`` handles
items ``r, r + W, ...`` (:func:`~ncsn_pl.core.seeding.shard_indices`). The CLI builds their Trainer with no logger
and no run-config saver: they write only what they are asked to (``--out_dir``, ``--out``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler

from ncsn_pl.core.seeding import shard_indices

__all__ = ["batch_loader", "run_predict", "shard_loader", "show_progress"]


class _RankShard(DistributedSampler):
    """Items ``rank, rank + world, ...`` of ``range(num_items)``, without padding.

    A ``DistributedSampler`` so that Lightning keeps it instead of sharding the loader a second time.
    """

    def __init__(self, num_items: int, rank: int, world_size: int) -> None:
        super().__init__(range(num_items), num_replicas=world_size, rank=rank, shuffle=False)
        self.items = list(shard_indices(num_items, rank, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


def shard_loader(
    num_items: int, batch_size: int, trainer: pl.Trainer, collate_fn: Callable[[list[int]], Any] | None = None
) -> DataLoader:
    """Batches of this rank's item indices (or whatever ``collate_fn`` makes of them)."""
    sampler = _RankShard(num_items, trainer.global_rank, trainer.world_size)
    return DataLoader(range(num_items), batch_size=batch_size, sampler=sampler, collate_fn=collate_fn)


class _AllItems(DistributedSampler):
    """Every item of a data set that is already this rank's share (a ``DistributedSampler``, so that Lightning
    does not shard it again)."""

    def __init__(self, num_items: int) -> None:
        super().__init__(range(max(num_items, 1)), num_replicas=1, rank=0, shuffle=False)
        self.num_items = num_items

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.num_items))

    def __len__(self) -> int:
        return self.num_items


def batch_loader(batches: list[list[int]]) -> DataLoader:
    """This rank's batches of item indices as ``LongTensor`` s, one per step; an empty rank gets one empty batch, so
    that every rank runs the loop's start and end hooks (Lightning skips a loop with no batches, and those hooks make
    collective calls)."""
    items = batches or [[]]
    return DataLoader(items, batch_size=None, sampler=_AllItems(len(items)), collate_fn=_as_long_tensor)


def _as_long_tensor(indices: list[int]) -> Tensor:
    return torch.tensor(indices, dtype=torch.long)


def run_predict(trainer: pl.Trainer, job: pl.LightningModule, interrupted: str | None = None) -> None:
    """Run ``job`` through ``trainer.predict`` (the CLI gives ``sample`` and ``fid`` a Trainer with no logger and
    no config saver: they write only what they are asked to).

    The jobs write their results themselves and return None from ``predict_step`` on purpose, so Lightning's
    warning about that is not shown. ``interrupted`` is printed by global rank 0 when Ctrl-C (SIGINT) stops the
    job (how to continue it), after Lightning's own line."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="predict returned None")
            trainer.predict(job, return_predictions=False)
    except SystemExit:  # how Lightning ends a KeyboardInterrupt (exit status 1)
        if interrupted and trainer.interrupted and trainer.is_global_zero:
            print(interrupted, flush=True)
        raise


def show_progress(trainer: pl.Trainer) -> bool:
    """Whether this process shows a sampling progress bar (rank 0, when the Trainer has one)."""
    return trainer.is_global_zero and trainer.progress_bar_callback is not None
