"""The reverse VE SDE solved with adaptive step sizes (Jolicoeur-Martineau, Li, Piche-Taillefer, Kachman, Mitliagkas,
2021, "Gotta Go Fast When Generating Data with Score-Based Models", Algorithm 1).

The VE SDE of score_sde (``sde_lib.VESDE``) runs in time ``t`` in [0, 1] with ``sigma(t) = sigma_min (sigma_max /
sigma_min)^t`` and ``g(t)^2 = d sigma^2 / dt = 2 sigma(t)^2 log(sigma_max / sigma_min)``; its reverse from ``t = 1``
to ``t = 0`` is ``dx = -g^2 s(x, sigma(t)) dt + g dw``. Each step compares a lower-order solver (Euler-Maruyama)
with a higher-order one (stochastic improved Euler, the same noise) and takes the step size from their difference.
Official code: AlexiaJM/score_sde_fast_sampling ``sampling.py``, ``AdaptivePredictor`` and
``pc_sampler_adaptive`` (``sde_sampling_torch.py`` in PyTorch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor

from ncsn_pl.core.samplers.base import (
    DivergenceWatch,
    LangevinCallback,
    LangevinStep,
    NoiseFn,
    Sampler,
    check_sigmas,
)
from ncsn_pl.core.scores import AnyScoreFn, SigmaScore

__all__ = ["AdaptiveVESDE", "adaptive_ve_sde"]

NAME = "AdaptiveVESDE"
H_MIN = 1e-10
"""The smallest step size (in t) the solver takes before it gives up (the official code's ``h_min``)."""


def _check_settings(eps_abs: float, eps_rel: float, h_init: float, theta: float, r: float) -> None:
    for name, value, example in (
        ("eps_abs", eps_abs, "0.0039 in the paper for data in [0, 1]"),
        ("eps_rel", eps_rel, "0.01 to 0.1 in the paper"),
        ("h_init", h_init, "0.01 in the paper"),
        ("theta", theta, "0.9 in the paper"),
        ("r", r, "0.9 in the paper"),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{NAME}.{name} must be a positive number ({example}), got {value!r}.")
    if not h_init <= 1:
        raise ValueError(f"{NAME}.h_init must be at most 1 (the whole time interval), got {h_init}.")
    if not theta <= 1:
        raise ValueError(f"{NAME}.theta is a safety factor in (0, 1] (0.9 in the paper), got {theta}.")


def _view(values: Tensor, x: Tensor) -> Tensor:
    """Per-sample values ``(B,)`` shaped to broadcast with ``x`` and in its dtype."""
    return values.to(x.dtype).view(-1, *(1,) * (x.ndim - 1))


@torch.no_grad()
def adaptive_ve_sde(
    score_fn: AnyScoreFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    eps_abs: float = 0.0039,
    eps_rel: float = 0.01,
    h_init: float = 0.01,
    theta: float = 0.9,
    r: float = 0.9,
    extrapolation: bool = True,
    denoise: bool = True,
    noise_fn: NoiseFn | None = None,
    callback: LangevinCallback | None = None,
) -> Tensor:
    """The reverse VE SDE from ``sigma_max`` to ``sigma_min`` of ``sigmas`` with adaptive step sizes, one per sample
    (Jolicoeur-Martineau et al. 2021, Algorithm 1).

    With ``t`` and ``h`` a sample's time and step size, ``z ~ N(0, I)`` and ``g^2 = 2 sigma^2 log(sigma_max /
    sigma_min)``:

    * Euler-Maruyama: ``x' = x + K1`` with ``K1 = h g(t)^2 s(x, sigma(t)) + sqrt(h) g(t) z``;
    * improved Euler: ``x'' = x + (K1 + K2) / 2`` with ``K2 = h g(t-h)^2 s(x', sigma(t-h)) + sqrt(h) g(t-h) z``;
    * the error ``E = || (x'' - x') / delta ||_2 / sqrt(n)`` over the sample's n values, with
      ``delta = max(eps_abs, eps_rel max(|x'|, |x'_prev|))`` (``x'_prev`` the last accepted ``x'``);
    * if ``E <= 1`` the step is accepted: ``x <- x''`` (extrapolation; ``x'`` without it), ``t <- t - h``;
    * either way ``h <- min(t, theta h E^-r)``.

    The samples step on together, each with its own ``t`` and ``h``, until every one reaches ``t = 0``
    (``sigma_min``); a sample that has arrived evaluates nothing more, so the NFE differs per sample: 2 per
    attempted step, plus 1 for ``denoise``, the step ``x + sigma_min^2 s(x, sigma_min)`` (Tweedie's formula, the
    official code's final step). Whether a step is accepted depends on its noise draw through the scaled norm over
    the sample's values; in the dimension of images that norm concentrates, rejections are rare and the dependence
    vanishes (tests: a Gaussian of 1,024 values gets its variance within 1 %), but with a few values the accepted
    draws are a biased choice of the noise: use it for images, not for low-dimensional data. Each step draws one
    noise ``z`` for the whole batch, so with :class:`~ncsn_pl.core.seeding.PerSampleNoise` a sample's ``k``-th
    step uses the ``k``-th draw of its own stream, in any batch.

    Args:
        score_fn: a :class:`~ncsn_pl.core.scores.SigmaScore` (it is evaluated at any sigma; NCSNv2 is one with
            :func:`~ncsn_pl.core.scores.sigma_scaled_score` ``(net.unscaled)``).
        x: the start, shape ``(B, ...)``: a draw of the prior ``N(0, sigma_max^2 I)``.
        sigmas: the trained schedule, descending, shape ``(L,)`` with ``L >= 2``: its ends are the SDE's.
        eps_abs: the absolute tolerance, in the data's units (0.0039, about 1/256, in the paper for data in [0, 1]).
        eps_rel: the relative tolerance (the official code's default 0.01; the paper's runs 0.01 to 0.1): larger is
            faster and coarser.
        h_init: the first step size in t (0.01).
        theta: the safety factor of the step size update (0.9).
        r: the exponent of the step size update (0.9).
        extrapolation: go on from the higher-order value ``x''`` (the paper's choice), else from ``x'``.
        denoise: end with the denoising step at ``sigma_min``.
        noise_fn: draws the noise z shaped like x (default ``torch.randn_like``).
        callback: called with a :class:`~ncsn_pl.core.samplers.LangevinStep` after every step (``level`` counts
            the steps, ``sigma`` is the largest sigma a sample stepped from, ``nfe`` is per sample) and after the
            denoising step.

    Returns:
        The samples, shaped like ``x``.

    Raises:
        ValueError: fewer than two sigmas, or a level-indexed score function.
        FloatingPointError: the samples became NaN or infinite, or a step size fell below 1e-10.
    """
    _check_settings(eps_abs, eps_rel, h_init, theta, r)
    values = check_sigmas(sigmas, NAME, min_levels=2)
    if not isinstance(score_fn, SigmaScore):
        raise ValueError(
            f"{NAME} evaluates the score at any sigma between sigma_max and sigma_min, which a level-indexed score "
            "function cannot do: pass a SigmaScore (for NCSNv2 sigma_scaled_score(net.unscaled)); NCSN's networks "
            "sample with AnnealedLangevin, ConsistentAnnealed, PredictorCorrector or ProbabilityFlowODE."
        )
    noise_fn = noise_fn or torch.randn_like
    sigma_max, sigma_min = values[0], values[-1]
    log_ratio = math.log(sigma_max / sigma_min)

    def sigma_at(t: Tensor) -> Tensor:
        return sigma_min * (sigma_max / sigma_min) ** t

    def drift_and_diffusion(x: Tensor, t: Tensor, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``h g^2 s(x, sigma(t))`` and ``sqrt(h) g`` (shaped like ``x``) and the score."""
        sigma = sigma_at(t)
        g2h = 2 * sigma**2 * log_ratio * h
        score = score_fn(x, sigma.to(x.dtype))
        return _view(g2h, x) * score, _view(g2h.sqrt(), x), score

    batch = x.shape[0]
    t = torch.ones(batch, dtype=torch.float64, device=x.device)  # every sample's time and step size
    h = torch.full_like(t, float(h_init))
    x_prev = x.clone()
    watch = DivergenceWatch(x, NAME, "Tighten eps_abs / eps_rel or check the score network.")
    step = 0
    while True:
        active = (t > 0).nonzero().squeeze(1)
        if active.numel() == 0:
            break
        # one draw for the whole batch: each sample's k-th step takes the k-th draw of its stream
        z = noise_fn(x)[active]
        xa, ta, ha, prev = x[active], t[active], h[active], x_prev[active]
        if bool((ha < H_MIN).any()):
            raise FloatingPointError(
                f"{NAME}: the step size fell below {H_MIN:g} at sigma={sigma_at(ta).max().item():.4g} (step {step}); "
                "loosen eps_abs / eps_rel or check the score network."
            )
        # Euler-Maruyama
        drift, diffusion, score = drift_and_diffusion(xa, ta, ha)
        k1 = drift + diffusion * z
        x_euler = xa + k1
        # improved Euler: the same noise, the drift and diffusion at t - h and x'
        drift, diffusion, _ = drift_and_diffusion(x_euler, (ta - ha).clamp(min=0), ha)
        x_heun = xa + 0.5 * (k1 + drift + diffusion * z)
        proposal, check = (x_heun, x_euler) if extrapolation else (x_euler, x_heun)
        # the error, scaled by the mixed tolerance and averaged over the sample's values (scaled L2 norm)
        scale = torch.maximum(check.abs(), prev.abs()).mul(eps_rel).clamp(min=eps_abs)
        error = ((x_heun - x_euler) / scale).flatten(1).pow(2).mean(1).sqrt().double()
        accept = error <= 1
        # accepted samples move on (out of place: the reports keep their x)
        keep = accept.view(-1, *(1,) * (xa.ndim - 1))
        x = x.index_copy(0, active, torch.where(keep, proposal, xa))
        x_prev[active] = torch.where(keep, check, prev)
        t_new = torch.where(accept, (ta - ha).clamp(min=0), ta)
        # the next step size: h <- min(t, theta h E^-r)
        t[active], h[active] = t_new, torch.minimum(t_new, theta * ha * error.pow(-r))
        sigma = sigma_at(ta).max().item()
        watch.update(proposal, step, 0, sigma)
        if callback is not None:
            nfe = torch.zeros(batch, dtype=torch.long, device=x.device).index_fill_(0, active, 2)
            step_size = 2 * sigma_at(ta) ** 2 * log_ratio * ha
            callback(LangevinStep(step, 0, sigma, step_size, x, score, z, "adaptive", nfe))
        watch.check()
        step += 1
    watch.check(final=True)
    if denoise:
        # Tweedie's formula at sigma_min
        score = score_fn(x, torch.full((batch,), sigma_min, dtype=x.dtype, device=x.device))
        x = x + sigma_min**2 * score
        if callback is not None:
            callback(LangevinStep(step, 0, sigma_min, sigma_min**2, x, score, None, "denoise"))
    return x


@dataclass(frozen=True)
class AdaptiveVESDE(Sampler):
    """The reverse VE SDE with adaptive step sizes (Jolicoeur-Martineau et al. 2021, "Gotta Go Fast", Algorithm 1)
    as a sampler setting.

    :meth:`sample` runs :func:`adaptive_ve_sde` with these settings between the ends of the trained schedule,
    which needs a network that takes any sigma (NCSNv2: ``sigma_scaled_score(net.unscaled)``). Its NFE differs
    per sample (:meth:`nfe` is None): the commands count it while sampling and record its mean and largest.
    Defaults: the official code's (``configs/default_cifar10_configs.py``; ``experiments.sh`` for VE models:
    ``abstol`` 0.0039).
    """

    eps_abs: float = 0.0039
    """The absolute tolerance in the data's units (0.0039, about 1/256: the paper's VE models, data in [0, 1])."""
    eps_rel: float = 0.01
    """The relative tolerance (0.01 in the official code; the paper's runs 0.01, 0.02, 0.05, 0.1): larger takes
    fewer steps."""
    h_init: float = 0.01
    """The first step size, in the SDE's time t in [0, 1]."""
    theta: float = 0.9
    """The safety factor of the step size update ``h <- min(t, theta h E^-r)``."""
    r: float = 0.9
    """The exponent of the step size update."""
    extrapolation: bool = True
    """Go on from the improved-Euler value (the paper's extrapolation), else from the Euler-Maruyama one."""
    denoise: bool = True
    """End with Tweedie's step ``x + sigma_min^2 s(x, sigma_min)`` (one more evaluation)."""

    function = staticmethod(adaptive_ve_sde)
    start: ClassVar[Literal["uniform", "gaussian"]] = "gaussian"

    def __post_init__(self) -> None:
        _check_settings(self.eps_abs, self.eps_rel, self.h_init, self.theta, self.r)

    def nfe(self, num_scales: int) -> None:
        """None: 2 per attempted step of each sample (plus 1 with ``denoise``), counted while sampling."""
        return None
