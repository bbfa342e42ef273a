"""Randomness keyed by position: per-step seeds, per-sample noise and the share of each process.

Training noise is seeded by (step, rank, micro-batch), so a resumed run draws what an uninterrupted one would;
sample ``k`` of a sample set is drawn from its own generator, seeded by ``step_seed(seed, k)``, so it is the same in
a batch of 1 or 1000 and on rank 0 of 1 or rank 3 of 8. The per-sample generator is EDM's ``StackedRandomGenerator``
(NVlabs/edm ``generate.py``): the samplers take its ``randn_like`` as their ``noise_fn``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["PerSampleNoise", "noise_from", "sample_seeds", "shard_indices", "step_seed"]


def step_seed(seed: int, *counters: int) -> int:
    """A 63-bit seed derived from ``seed`` and counters (step, rank, sample index, ...).

    Randomness keyed by position rather than by a running generator makes training resumable bit for bit
    and makes sample ``k`` the same whatever the number of processes.
    """
    value = seed & 0xFFFFFFFFFFFFFFFF
    for counter in counters:
        value = (value * 6364136223846793005 + 1442695040888963407 + counter) & 0xFFFFFFFFFFFFFFFF
        value ^= value >> 29
    return value & 0x7FFFFFFFFFFFFFFF


def sample_seeds(seed: int, indices: Sequence[int]) -> list[int]:
    """The per-sample seeds ``step_seed(seed, k)`` of the samples ``k`` in ``indices``."""
    return [step_seed(seed, int(k)) for k in indices]


def shard_indices(num_samples: int, rank: int, world_size: int) -> range:
    """The sample indices process ``rank`` of ``world_size`` draws: ``rank, rank + world_size, ...``.

    Every index in ``[0, num_samples)`` belongs to exactly one rank; the shares differ by at most one.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in [0, world_size), got rank={rank}, world_size={world_size}.")
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}.")
    return range(rank, num_samples, world_size)


def noise_from(generator: torch.Generator | None) -> Callable[[Tensor], Tensor]:
    """A ``noise_fn`` for the samplers that draws ``N(0, I)`` shaped like ``x`` from ``generator``."""

    def noise_fn(x: Tensor) -> Tensor:
        return torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)

    return noise_fn


class PerSampleNoise:
    """Random draws for a batch whose row ``i`` comes from its own generator, seeded with ``seeds[i]``.

    Row ``i`` of every draw depends only on ``seeds[i]`` and on the draws made so far, never on the other rows,
    so a batch can be split or regrouped freely (EDM's ``StackedRandomGenerator``).

    Args:
        seeds: one seed per row of the batch.
        device: device of the generators and of the draws.
    """

    def __init__(self, seeds: Sequence[int], device: torch.device | str | None = None) -> None:
        if len(seeds) == 0:
            raise ValueError("PerSampleNoise needs at least one seed.")
        self.device = torch.device(device if device is not None else "cpu")
        self.generators = [torch.Generator(device=self.device).manual_seed(int(s)) for s in seeds]

    def __len__(self) -> int:
        return len(self.generators)

    def _fill(self, out: Tensor, normal: bool) -> Tensor:
        if not out.shape or out.shape[0] != len(self.generators):
            raise ValueError(
                f"A per-sample draw needs a leading batch dimension of {len(self.generators)}, got shape "
                f"{tuple(out.shape)}."
            )
        for row, generator in zip(out, self.generators, strict=True):
            if normal:
                row.normal_(generator=generator)
            else:
                row.uniform_(generator=generator)
        return out

    def rand(self, shape: Sequence[int], dtype: torch.dtype | None = None) -> Tensor:
        """``U[0, 1)`` draws of ``shape``; row ``i`` from generator ``i``."""
        return self._fill(torch.empty(tuple(shape), dtype=dtype, device=self.device), normal=False)

    def randn(self, shape: Sequence[int], dtype: torch.dtype | None = None) -> Tensor:
        """``N(0, 1)`` draws of ``shape``; row ``i`` from generator ``i``."""
        return self._fill(torch.empty(tuple(shape), dtype=dtype, device=self.device), normal=True)

    def randn_like(self, x: Tensor) -> Tensor:
        """``N(0, 1)`` draws shaped like ``x``: the ``noise_fn`` of the samplers."""
        if x.device != self.device:
            raise ValueError(
                f"The samples are on {x.device} but the per-sample generators on {self.device}; create "
                "PerSampleNoise on the samples' device."
            )
        return self.randn(x.shape, dtype=x.dtype)
