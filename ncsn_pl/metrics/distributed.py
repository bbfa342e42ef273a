"""Counts and states of the metrics across processes (collective calls: every rank makes them)."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

__all__ = ["compact", "global_count", "list_count", "world"]


def world() -> tuple[int, int]:
    """(rank, world size) of the default process group, (0, 1) outside distributed runs."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def global_count(local: int, device: torch.device) -> int:
    """Sum of a per-process count over all processes (collective: call it on every rank)."""
    if world()[1] == 1:
        return local
    t = torch.tensor([local], dtype=torch.long, device=device)
    dist.all_reduce(t)
    return int(t.item())


def list_count(state: list[Tensor] | Tensor) -> int:
    if isinstance(state, Tensor):
        return int(state.shape[0])
    return sum(int(t.shape[0]) for t in state)


def compact(metric: Metric, names: tuple[str, ...], num_features: int) -> None:
    """Concatenate list states into one (n, d) tensor per process.

    KID and IS gather list states element by element (``dist_reduce_fx=None``), which needs the same list
    length on every rank; with one element each (possibly empty) the ranks may have seen different numbers
    of batches.
    """
    for name in names:
        state = getattr(metric, name)
        if isinstance(state, list) and len(state) != 1:
            merged = dim_zero_cat(state) if state else torch.empty(0, num_features, device=metric.device)
            setattr(metric, name, [merged])
