"""A non-finite training loss noticed without a host sync per step, and reported by every process together.

Each step records on the device whether its per-sample losses were all finite (the first bad step, its batch size
and which samples); nothing is read back. The record is read only at a check: before every checkpoint is written,
every ``log_every_n_steps`` steps and when training ends. A check is a collective that every rank makes at the
same step: the ranks gather their records, so all of them stop together, at the same place, with the same message.
"""

from __future__ import annotations

from collections.abc import Callable

import lightning.pytorch as pl
import torch
from torch import Tensor

__all__ = ["LossDivergenceWatch"]


class LossDivergenceWatch:
    """The first non-finite training loss of this process, kept on the device until a check reads it."""

    def __init__(self) -> None:
        self.step: Tensor | None = None  # first bad step, -1 while none
        self.size: Tensor | None = None  # its batch size
        self.bad: Tensor | None = None  # which of its samples had a non-finite loss (padded)

    def note(self, losses: Tensor, step: int) -> None:
        """Record ``losses`` (one per sample) of ``step`` if they are the first with a non-finite value; no sync."""
        bad = ~torch.isfinite(losses.detach())
        device, size = bad.device, bad.shape[0]
        if self.step is None or self.step.device != device:
            self.step = torch.full((), -1, dtype=torch.long, device=device)
            self.size = torch.zeros((), dtype=torch.long, device=device)
            self.bad = torch.zeros(size, dtype=torch.bool, device=device)
        if self.bad.shape[0] < size:
            self.bad = torch.cat([self.bad, self.bad.new_zeros(size - self.bad.shape[0])])
        first = bad.any() & (self.step < 0)
        self.step = torch.where(first, step, self.step)
        self.size = torch.where(first, size, self.size)
        padded = torch.cat([bad, bad.new_zeros(self.bad.shape[0] - size)])
        self.bad = torch.where(first, padded, self.bad)

    def check(self, trainer: pl.Trainer, levels_of: Callable[[int, int], Tensor], num_scales: int
              ) -> tuple[int, list[int]] | None:  # fmt: skip
        """Collective (every rank, at the same step): the first step with a non-finite loss on any rank and the
        noise levels of its bad samples, or ``None``.

        Args:
            trainer: the Trainer (its strategy gathers the records on the root device, as NCCL requires).
            levels_of: ``(step, batch_size) -> levels`` drawn again for this rank's batch of that step.
            num_scales: L.
        """
        device = trainer.strategy.root_device
        record = torch.zeros(num_scales + 1, dtype=torch.long, device=device)
        record[0] = -1
        if self.step is not None:
            step = int(self.step)  # the only read of the record: here, at a check
            if step >= 0:
                size = int(self.size)
                levels = levels_of(step, size).to(device)
                record[0] = step
                record[1 + levels[self.bad[:size].to(device)]] = 1
        gathered = trainer.strategy.all_gather(record).reshape(-1, num_scales + 1).cpu()
        steps = [int(s) for s in gathered[:, 0] if s >= 0]
        if not steps:
            return None
        first = min(steps)
        at_first = gathered[gathered[:, 0] == first, 1:].amax(dim=0)
        return first, torch.nonzero(at_first).flatten().tolist()
