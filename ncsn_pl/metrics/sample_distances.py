"""Distances between a sample set and a known distribution, for data whose density is known (the toy mixture).

Unlike the training loss, which is weighted by each schedule's own sigmas, these compare the samples with the
data, so their values are comparable between runs with different noise schedules.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ncsn_pl.core.distributions import GaussianMixture

__all__ = ["mode_weight_error", "random_directions", "sliced_wasserstein"]


def random_directions(dim: int, num: int, generator: torch.Generator | None = None) -> Tensor:
    """``num`` directions drawn uniformly on the unit sphere of R^dim, shape ``(dim, num)``, float64."""
    if dim < 1 or num < 1:
        raise ValueError(f"dim and num must be >= 1, got {dim} and {num}.")
    directions = torch.randn(dim, num, generator=generator, dtype=torch.float64)
    return directions / directions.norm(dim=0, keepdim=True)


def sliced_wasserstein(
    x: Tensor, y: Tensor, num_projections: int = 256, generator: torch.Generator | None = None
) -> Tensor:
    """The sliced 2-Wasserstein distance between two sample sets of equal size (Rabin et al. 2011; Bonneel et al.
    2015, "Sliced and Radon Wasserstein Barycenters of Measures").

    ``SW_2(x, y)^2 = E_theta W_2(theta^T x, theta^T y)^2`` over directions ``theta`` uniform on the unit sphere; in
    one dimension ``W_2`` between two sets of ``N`` points pairs them in sorted order. The expectation is a mean
    over ``num_projections`` random directions. For ``N(m_1, s_1^2 I)`` and ``N(m_2, s_2^2 I)`` in ``D``
    dimensions it is ``sqrt(|m_1 - m_2|^2 / D + (s_1 - s_2)^2)``; two finite sample sets of the same distribution
    are ``O(N^-1/2)`` apart.

    Args:
        x: the first sample set, ``(N, D)``.
        y: the second sample set, ``(N, D)``.
        num_projections: random directions averaged over.
        generator: draws the directions (pass a seeded one for a repeatable value).

    Returns:
        A float64 scalar; ``inf`` when ``x`` or ``y`` holds a non-finite value.
    """
    if x.ndim != 2 or x.shape != y.shape:
        raise ValueError(f"x and y must be (N, D) with the same N and D, got {tuple(x.shape)} and {tuple(y.shape)}.")
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        return torch.tensor(float("inf"), dtype=torch.float64)
    directions = random_directions(x.shape[1], num_projections, generator).to(x.device)
    # project, then pair the points of each projection in sorted order (the 1-D optimal transport plan)
    px = torch.sort(x.double() @ directions, dim=0).values
    py = torch.sort(y.double() @ directions, dim=0).values
    return (px - py).pow(2).mean().sqrt()


def mode_weight_error(samples: Tensor, mixture: GaussianMixture) -> Tensor:
    """How far the share of the samples at each mode is from the mixture's weights: the total variation
    ``1/2 sum_k |f_k - w_k|`` between the fractions ``f`` of :meth:`GaussianMixture.component_fractions` and the
    weights ``w``.

    Annealed Langevin dynamics recovers the 0.8 / 0.2 weights of the NCSN toy mixture, plain Langevin dynamics
    does not (Song & Ermon 2019, §3.2.2, Fig. 3): 0.3 for an even split. Non-finite samples count as assigned to
    no mode, so a diverged sample set scores up to 1.

    Args:
        samples: ``(N, D)``.
        mixture: the distribution the samples should follow.

    Returns:
        A float64 scalar in ``[0, 1]``.
    """
    finite = torch.isfinite(samples).all(dim=1)
    fractions = mixture.component_fractions(samples[finite]) * finite.double().mean()
    missing = 1.0 - fractions.sum()  # the share of non-finite samples
    return 0.5 * ((fractions - mixture.weights).abs().sum() + missing)
