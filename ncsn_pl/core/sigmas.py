"""Noise schedules of NCSN and the NCSNv2 rules that choose them (pure PyTorch / NumPy).

Noise levels are indexed ``0 .. L-1`` with index 0 the largest sigma, as in the official code.
``sigma_max`` is NCSN's ``sigma_begin`` and ``sigma_min`` its ``sigma_end``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import brentq, minimize_scalar
from scipy.stats import norm

__all__ = [
    "geometric_sigmas",
    "karras_sigmas",
    "validate_sigma_range",
    "max_pairwise_distance",
    "ratio_rule_value",
    "num_scales_from_ratio_rule",
    "langevin_variance_ratio",
    "step_lr_from_variance_rule",
    "langevin_step_lr",
    "resolve_auto_schedule",
]

AUTO = "auto"


def validate_sigma_range(sigma_max: float, sigma_min: float, num_scales: int) -> None:
    """Raise a ``ValueError`` that says what to fix if ``(sigma_max, sigma_min, num_scales)`` is impossible."""
    if isinstance(num_scales, bool) or not isinstance(num_scales, int) or num_scales < 1:
        raise ValueError(f"num_scales must be an integer >= 1, got {num_scales!r}.")
    for name, value in (("sigma_max", sigma_max), ("sigma_min", sigma_min)):
        if not math.isfinite(float(value)) or float(value) <= 0:
            raise ValueError(f"{name} must be a finite positive number, got {value!r}.")
    if num_scales == 1 and sigma_min != sigma_max:
        raise ValueError(
            f"With num_scales=1 the schedule has one sigma: set sigma_min equal to sigma_max "
            f"(got sigma_max={sigma_max}, sigma_min={sigma_min})."
        )
    if num_scales > 1 and sigma_min >= sigma_max:
        raise ValueError(
            f"sigma_min ({sigma_min}) must be smaller than sigma_max ({sigma_max}): the schedule descends "
            f"from sigma_max (NCSN's sigma_begin) to sigma_min (sigma_end)."
        )


def geometric_sigmas(sigma_max: float, sigma_min: float, num_scales: int) -> torch.Tensor:
    """The geometric noise schedule of NCSN (Song & Ermon 2019, §4.2).

    ``sigma_i = exp(linspace(log sigma_max, log sigma_min, L))_i``, computed in float64 as the official
    ``get_sigmas`` does, then returned as float32.

    Args:
        sigma_max: the largest noise level (NCSN's ``sigma_begin``; 1.0 in v1, 50 for CIFAR-10 in v2).
        sigma_min: the smallest noise level (NCSN's ``sigma_end``; 0.01 in both papers).
        num_scales: the number of levels L (10 in v1).

    Returns:
        A descending float32 tensor of shape ``(L,)``.
    """
    validate_sigma_range(sigma_max, sigma_min, num_scales)
    sigmas = np.exp(np.linspace(np.log(sigma_max), np.log(sigma_min), num_scales))
    return torch.from_numpy(sigmas).float()


def karras_sigmas(sigma_max: float, sigma_min: float, num_steps: int, rho: float = 7.0) -> torch.Tensor:
    """The sampling grid of EDM (Karras et al. 2022, Eq. 5; NVlabs/edm ``generate.py``, ``edm_sampler``).

    ``sigma_i = (sigma_max^(1/rho) + i / (N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``, computed in float64,
    returned as float32. ``rho = 7`` in EDM; ``rho = 1`` is linear in sigma, and large rho tends to the geometric grid.

    Args:
        sigma_max: the largest sigma (NCSN's ``sigma_begin``).
        sigma_min: the smallest sigma.
        num_steps: the number of sigmas N (18 in EDM for CIFAR-10).
        rho: the exponent (7 in EDM).

    Returns:
        A descending float32 tensor of shape ``(N,)``.
    """
    validate_sigma_range(sigma_max, sigma_min, num_steps)
    if not rho > 0:
        raise ValueError(f"rho must be positive (7 in EDM), got {rho}.")
    ramp = np.linspace(0.0, 1.0, num_steps)
    sigmas = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.from_numpy(sigmas).float()


@torch.no_grad()
def max_pairwise_distance(
    x: torch.Tensor,
    *,
    max_exact: int = 10_000,
    num_anchors: int = 1_000,
    chunk_size: int = 1_024,
    generator: torch.Generator | None = None,
) -> tuple[float, bool]:
    """The largest Euclidean distance between two training points: NCSNv2's Technique 1 for ``sigma_max``.

    Song & Ermon (2020), Technique 1: choose sigma_1 as large as the maximum Euclidean distance between
    all pairs of training data points. Exact when the set has at most ``max_exact`` points. Larger sets get
    an estimate from below: the farthest point from each of ``num_anchors`` random anchors, over all points.

    Args:
        x: training data of shape ``(N, ...)`` (images in [0, 1]).
        max_exact: the largest N for which all N^2 pairs are compared.
        num_anchors: anchors of the estimate for larger sets.
        chunk_size: rows compared at once (bounds the memory to ``chunk_size * N`` distances).
        generator: randomness for the anchors.

    Returns:
        ``(distance, exact)``: the distance and whether it is exact (``False`` for the lower-bound estimate).
    """
    if x.shape[0] < 2:
        raise ValueError(f"max_pairwise_distance needs at least 2 data points, got {x.shape[0]}.")
    flat = x.reshape(x.shape[0], -1).double()
    exact = flat.shape[0] <= max_exact
    if exact:
        anchors = flat
    else:
        index = torch.randperm(flat.shape[0], generator=generator)[:num_anchors]
        anchors = flat[index]
    best = 0.0
    for start in range(0, anchors.shape[0], chunk_size):
        best = max(best, torch.cdist(anchors[start : start + chunk_size], flat).max().item())
    return best, exact


def ratio_rule_value(gamma: float, dim: int) -> float:
    """NCSNv2 Technique 2: ``Phi(sqrt(2D)(gamma-1) + 3 gamma) - Phi(sqrt(2D)(gamma-1) - 3 gamma)``.

    The paper asks for a ratio ``gamma = sigma_{i-1} / sigma_i`` that makes this about 0.5; the released
    configs give 0.567 (ermongroup/ncsnv2 ``configs/*.yml``: e.g. CIFAR-10's sigma_max 50 and L = 232).
    """
    shift = math.sqrt(2 * dim) * (gamma - 1)
    return float(norm.cdf(shift + 3 * gamma) - norm.cdf(shift - 3 * gamma))


def num_scales_from_ratio_rule(sigma_max: float, sigma_min: float, dim: int, target: float = 0.5) -> tuple[int, float]:
    """NCSNv2 Technique 2: the number of geometric levels whose ratio puts :func:`ratio_rule_value` at ``target``.

    Solves ``ratio_rule_value(gamma, D) = target`` for gamma, then ``L = 1 + log(sigma_max/sigma_min) / log(gamma)``.

    Args:
        sigma_max: the largest sigma (e.g. from :func:`max_pairwise_distance`).
        sigma_min: the smallest sigma (0.01 in the paper).
        dim: the data dimension D = C*H*W.
        target: the value the rule aims for (0.5 in the paper).

    Returns:
        ``(num_scales, exact_num_scales)``: L rounded up to an integer, and the real-valued solution
        (CIFAR-10 with sigma_max 50: 219.2; the official ``cifar10.yml`` uses 232).
    """
    validate_sigma_range(sigma_max, sigma_min, 2)
    if not 0 < target < ratio_rule_value(1.0, dim):
        raise ValueError(f"target must lie in (0, {ratio_rule_value(1.0, dim):.4f}), got {target}.")
    gamma = brentq(lambda g: ratio_rule_value(g, dim) - target, 1.0, 100.0, xtol=1e-14)
    exact = 1 + math.log(sigma_max / sigma_min) / math.log(gamma)
    return max(2, math.ceil(exact - 1e-9)), exact


def langevin_variance_ratio(step_lr: float, gamma: float, sigma_min: float, n_steps_each: int) -> float:
    """NCSNv2 Technique 4: ``s_T^2 / sigma_i^2`` after T Langevin steps at one level.

    The variance ratio of T steps ``x <- x + a s + sqrt(2a) z`` (the official code's convention,
    ``a = eps sigma_i^2 / sigma_L^2``) on N(0, sigma_i^2 I) started from N(0, sigma_{i-1}^2 I):
    ``(1 - eps/sigma_L^2)^{2T} (gamma^2 - c) + c`` with ``c = 2 eps / (sigma_L^2 - sigma_L^2 (1 - eps/sigma_L^2)^2)``.
    """
    u = step_lr / sigma_min**2
    if not 0 < u < 1:
        raise ValueError(f"step_lr must lie in (0, sigma_min^2) = (0, {sigma_min**2}), got {step_lr}.")
    c = 2 * u / (1 - (1 - u) ** 2)
    return (1 - u) ** (2 * n_steps_each) * (gamma**2 - c) + c


def step_lr_from_variance_rule(gamma: float, sigma_min: float, n_steps_each: int) -> float:
    """NCSNv2 Technique 4: the ``step_lr`` that brings :func:`langevin_variance_ratio` closest to 1.

    The ratio stays above 1 (its infimum is ``1 / (1 - eps / (2 sigma_L^2))``), so this is its minimiser
    (CIFAR-10, T=5: 6.18e-6; CelebA-64, T=5: 3.34e-6; the official configs use 6.2e-6 and 3.3e-6).

    Args:
        gamma: the ratio of consecutive sigmas, ``sigma_{i-1} / sigma_i``.
        sigma_min: the smallest sigma, sigma_L.
        n_steps_each: T, the Langevin steps per level.
    """
    if gamma <= 1:
        raise ValueError(f"gamma (sigma_{{i-1}}/sigma_i) must be > 1, got {gamma}.")
    if n_steps_each < 1:
        raise ValueError(f"n_steps_each must be >= 1, got {n_steps_each}.")
    result = minimize_scalar(
        lambda log_u: langevin_variance_ratio(math.exp(log_u) * sigma_min**2, gamma, sigma_min, n_steps_each),
        bounds=(math.log(1e-12), math.log(1 - 1e-9)),
        method="bounded",
        options={"xatol": 1e-10},
    )
    return math.exp(result.x) * sigma_min**2


def langevin_step_lr(sigmas: torch.Tensor | list[float], n_steps_each: int) -> float:
    """NCSNv2 Technique 4 on a schedule: :func:`step_lr_from_variance_rule` for its ratio ``gamma = sigma_1 /
    sigma_2`` (every ratio of a geometric schedule), its ``sigma_min`` and T = ``n_steps_each``.

    A schedule of one level has no ratio; it takes ``gamma`` just above 1 (the rule's limit).
    """
    values = sigmas.tolist() if isinstance(sigmas, torch.Tensor) else [float(s) for s in sigmas]
    gamma = values[0] / values[1] if len(values) > 1 else 1.0 + 1e-6
    return step_lr_from_variance_rule(gamma, values[-1], n_steps_each)


def resolve_auto_schedule(
    train_data: torch.Tensor,
    *,
    sigma_max: float | str,
    sigma_min: float,
    num_scales: int | str,
    step_lr: float | str,
    n_steps_each: int,
) -> dict[str, float]:
    """NCSNv2's rules for every setting given as ``"auto"``: Technique 1 for ``sigma_max``, Technique 2 for
    ``num_scales``, Technique 4 for ``step_lr`` (Song & Ermon 2020, §3).

    Args:
        train_data: training items ``(N, ...)`` (images in [0, 1]); Technique 1 is exact up to 10,000 of them.
        sigma_max, sigma_min, num_scales, step_lr, n_steps_each: the settings, numbers or ``"auto"``.

    Returns:
        The resolved settings only, e.g. ``{"sigma_max": 12.3, "num_scales": 52}``.
    """
    resolved: dict[str, float] = {}
    if sigma_max == AUTO:
        sigma_max, _ = max_pairwise_distance(train_data)
        resolved["sigma_max"] = sigma_max
    if num_scales == AUTO:
        num_scales, _ = num_scales_from_ratio_rule(float(sigma_max), sigma_min, math.prod(train_data.shape[1:]))
        resolved["num_scales"] = num_scales
    if step_lr == AUTO:
        resolved["step_lr"] = langevin_step_lr(geometric_sigmas(float(sigma_max), sigma_min, int(num_scales)),
                                               n_steps_each)  # fmt: skip
    return resolved
