"""Denoising score matching across noise levels (pure PyTorch)."""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["ScoreFn", "sample_levels", "spread_levels", "check_levels", "dsm_loss"]

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""A score function ``score_fn(x, levels) -> score`` with ``levels`` a LongTensor of shape ``(B,)``."""


def sample_levels(
    batch_size: int, num_scales: int, *, device: torch.device | None = None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Noise levels drawn uniformly from ``{0, ..., L-1}``, one per sample (NCSN's training labels)."""
    return torch.randint(0, num_scales, (batch_size,), device=device, generator=generator)


# 2^32 / golden ratio, rounded to an odd integer (Knuth's multiplicative hashing constant)
_GOLDEN_32 = 2654435769


def spread_levels(indices: torch.Tensor, num_scales: int) -> torch.Tensor:
    """Noise levels for the items ``indices`` of an evaluation, spread over all ``num_scales`` levels.

    Every ``L`` consecutive indices ``mL .. mL + L - 1`` take each level exactly once, and the first ``n < L`` take
    levels spread evenly over ``0 .. L-1``: position ``r = k mod L`` takes the rank of ``r * g mod 1`` among
    ``{j * g mod 1 : j < L}`` (``g`` the golden ratio's fractional part, in 32-bit fixed point, so the levels are
    exact integers on any device). Index 0 takes level 0.

    Args:
        indices: item indices ``>= 0``, any shape (integer tensor).
        num_scales: L.

    Returns:
        Levels in ``[0, L)``, shaped and placed like ``indices``.
    """
    keys = torch.arange(num_scales, dtype=torch.int64) * _GOLDEN_32 % (1 << 32)
    rank = torch.empty(num_scales, dtype=torch.int64)
    rank[torch.argsort(keys)] = torch.arange(num_scales)
    return rank.to(indices.device)[indices.long() % num_scales]


def check_levels(levels: torch.Tensor, num_scales: int) -> None:
    """Raise a ``ValueError`` unless ``levels`` are integer indices in ``[0, num_scales)``."""
    if levels.dtype.is_floating_point or levels.dtype == torch.bool:
        raise ValueError(f"levels must be integer indices into sigmas, got dtype {levels.dtype}.")
    if levels.numel() and (int(levels.min()) < 0 or int(levels.max()) >= num_scales):
        raise ValueError(
            f"levels must lie in [0, {num_scales}) for a schedule of {num_scales} sigmas, "
            f"got values from {int(levels.min())} to {int(levels.max())}."
        )


def dsm_loss(
    score_fn: ScoreFn,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    levels: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    anneal_power: float = 2.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-sample denoising score matching loss over a noise schedule (NCSN, Song & Ermon 2019, Eq. 6).

    ``l(x) = 1/2 * sigma^anneal_power * || s(x + sigma z, i) + z / sigma ||^2`` summed over all dimensions,
    with level ``i`` uniform and ``z ~ N(0, I)``. The target ``-z / sigma`` is the score of the
    perturbation kernel N(x, sigma^2 I). The batch mean of the result is the official training loss.

    Args:
        score_fn: ``score_fn(x_noisy, levels)`` returning a tensor shaped like ``x``.
        x: clean data, shape ``(B, ...)``.
        sigmas: the descending schedule, shape ``(L,)``.
        levels: noise level indices, shape ``(B,)``; drawn uniformly when not given.
        noise: the Gaussian noise z, shaped like ``x``; drawn when not given.
        anneal_power: the exponent of the weighting lambda(sigma) = sigma^anneal_power (2 in both papers).
        generator: randomness for ``levels`` and ``noise`` when they are drawn here.

    Returns:
        The loss of each sample, shape ``(B,)``.
    """
    if levels is None:
        levels = sample_levels(x.shape[0], sigmas.shape[0], device=x.device, generator=generator)
    else:
        check_levels(levels, sigmas.shape[0])
    if noise is None:
        noise = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
    sigma = sigmas.to(device=x.device, dtype=x.dtype)[levels].view(-1, *(1,) * (x.ndim - 1))
    score = score_fn(x + sigma * noise, levels)
    residual = (score + noise / sigma).flatten(1)
    return 0.5 * residual.pow(2).sum(dim=1) * sigma.flatten() ** anneal_power
