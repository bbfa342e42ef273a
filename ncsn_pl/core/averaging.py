"""Exponential moving average of the weights with a warm-up (pure PyTorch)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

__all__ = ["ema_decay", "warmup_ema_update"]


def ema_decay(decay: float, num_updates: int | torch.Tensor, warmup: bool = True) -> float | torch.Tensor:
    """The decay of the ``n``-th EMA update: ``min(decay, (1 + n) / (10 + n))`` with the warm-up, else ``decay``.

    The warm-up is the one of TensorFlow's ``ExponentialMovingAverage(num_updates=...)`` and of the score_sde / EDM
    code bases: early on the average follows the weights closely, so it forgets the random initialisation within a
    few hundred updates instead of ``decay ** n`` (22 % of it left after 1,500 updates at 0.999).

    Args:
        decay: the decay after the warm-up (NCSNv2's Technique 5 uses 0.999).
        num_updates: ``n``, the updates already averaged (``>= 1``; the first update copies the weights).
        warmup: apply the warm-up.
    """
    if not warmup:
        return decay
    if isinstance(num_updates, torch.Tensor):
        return torch.clamp((1 + num_updates) / (10 + num_updates), max=decay)
    return min(decay, (1 + num_updates) / (10 + num_updates))


def warmup_ema_update(decay: float, warmup: bool = True) -> Callable[..., None]:
    """A ``multi_avg_fn`` for ``torch.optim.swa_utils.AveragedModel``: ``ema <- d ema + (1 - d) w`` with
    ``d = ema_decay(decay, n)``, computed on the device (no host read per step)."""
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"decay must be in [0, 1], got {decay}.")

    @torch.no_grad()
    def update(ema: Sequence[torch.Tensor], current: Sequence[torch.Tensor], num_updates: torch.Tensor) -> None:
        if not ema[0].is_floating_point():  # integer buffers (counters) follow the weights
            for average, weights in zip(ema, current, strict=True):
                average.copy_(weights)
            return
        d = ema_decay(decay, num_updates.to(torch.float32)) if warmup else torch.tensor(decay, device=ema[0].device)
        weight = (1 - d).to(ema[0].dtype)
        for average, weights in zip(ema, current, strict=True):
            average.lerp_(weights, weight)

    return update
