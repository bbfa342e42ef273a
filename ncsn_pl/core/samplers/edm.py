"""EDM's stochastic sampler on the VE schedule (Karras, Aittala, Aila, Laine, NeurIPS 2022, "Elucidating the design
space of diffusion-based generative models", Algorithm 2): Heun's method on the probability-flow ODE with "churn",
noise that first raises each step's sigma by a factor ``1 + gamma`` and so corrects errors of earlier steps.

In sigma time the VE SDE's flow is ``dx/dsigma = -sigma s(x, sigma)`` (EDM's ``(x - D(x; sigma)) / sigma`` with the
denoiser ``D = x + sigma^2 s``). Official code: NVlabs/edm ``generate.py`` ``edm_sampler``; k-diffusion
``sampling.py`` ``sample_heun`` with ``s_churn``.
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
    check_int,
    check_sigmas,
)
from ncsn_pl.core.samplers.ode import ode_grid
from ncsn_pl.core.scores import AnyScoreFn, SigmaScore, score_at

__all__ = ["EDMStochastic", "edm_stochastic"]

NAME = "EDMStochastic"


def _check_settings(num_steps: int, rho: float, s_churn: float, s_tmin: float, s_tmax: float, s_noise: float) -> None:
    check_int(f"{NAME}.num_steps", num_steps, 2)
    if not rho > 0:
        raise ValueError(f"{NAME}.rho must be positive (7 in EDM), got {rho}.")
    if not s_churn >= 0:
        raise ValueError(f"{NAME}.s_churn must be >= 0 (0: no churn, the deterministic ODE; 40 in EDM), got {s_churn}.")
    if not 0 <= s_tmin <= s_tmax:
        raise ValueError(f"{NAME}: the churn window needs 0 <= s_tmin <= s_tmax, got s_tmin={s_tmin}, s_tmax={s_tmax}.")
    if not s_noise > 0:
        raise ValueError(f"{NAME}.s_noise must be positive (1 to 1.007 in EDM), got {s_noise}.")


def churn_gamma(num_steps: int, s_churn: float) -> float:
    """EDM's ``gamma = min(S_churn / N, sqrt(2) - 1)`` for a grid of N sigmas (Algorithm 2)."""
    return min(s_churn / num_steps, math.sqrt(2) - 1)


@torch.no_grad()
def edm_stochastic(
    score_fn: AnyScoreFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    num_steps: int = 256,
    rho: float = 7.0,
    s_churn: float = 40.0,
    s_tmin: float = 0.025,
    s_tmax: float = 25.0,
    s_noise: float = 1.003,
    denoise: bool = True,
    noise_fn: NoiseFn | None = None,
    callback: LangevinCallback | None = None,
) -> Tensor:
    """EDM's stochastic sampler (Karras et al. 2022, Algorithm 2) on EDM's grid between ``sigma_max`` and
    ``sigma_min`` of the schedule.

    On the grid ``t_0 > ... > t_{N-1}`` (:func:`~ncsn_pl.core.sigmas.karras_sigmas`, ``rho``), with ``t_N = 0``
    appended with ``denoise``, each step ``i``:

    * churn: ``gamma_i = min(S_churn / N, sqrt(2) - 1)`` if ``S_tmin <= t_i <= S_tmax``, else 0;
      ``t^ = (1 + gamma_i) t_i``, ``x^ = x_i + sqrt(t^2 - t_i^2) S_noise z``;
    * Euler: ``d = -t^ s(x^, t^)``, ``x_{i+1} = x^ + (t_{i+1} - t^) d``;
    * Heun's correction, unless ``t_{i+1} = 0``: ``x_{i+1} = x^ + (t_{i+1} - t^) (d + d') / 2`` with
      ``d' = -t_{i+1} s(x_{i+1}, t_{i+1})``.

    The step to 0 is the denoising step ``x + t^2 s(x, t^)`` (Tweedie's formula). With ``S_churn = 0`` this is
    EDM's Algorithm 1, :func:`~ncsn_pl.core.samplers.probability_flow_ode` with ``num_steps``.

    Args:
        score_fn: a :class:`~ncsn_pl.core.scores.SigmaScore` (it is evaluated at any sigma, ``t^`` above the grid
            too; NCSNv2 is one with :func:`~ncsn_pl.core.scores.sigma_scaled_score` ``(net.unscaled)``).
        x: the start, shape ``(B, ...)``: a draw of ``N(0, sigma_max^2 I)`` (EDM's ``latents * t_0``).
        sigmas: the trained schedule, descending, shape ``(L,)`` with ``L >= 2``: its ends are the grid's.
        num_steps: N, the sigmas of the grid (EDM's stochastic ImageNet-64 setting: 256, NFE 511).
        rho: the exponent of EDM's grid (7).
        s_churn: S_churn, the total churn (0: the deterministic ODE).
        s_tmin, s_tmax: the window of sigmas that get churn, in the data's units.
        s_noise: S_noise, the churn noise's scale (slightly above 1 offsets the denoiser's loss of detail).
        denoise: end at sigma = 0 with the denoising step; else end at ``sigma_min``.
        noise_fn: draws the noise z shaped like x (default ``torch.randn_like``); drawn only at steps with churn.
        callback: called with a :class:`~ncsn_pl.core.samplers.LangevinStep` after every step (``level`` is the
            grid index, ``sigma`` is ``t^``).

    Returns:
        The samples, shaped like ``x``.

    Raises:
        ValueError: fewer than two sigmas, or a level-indexed score function.
        FloatingPointError: the samples became NaN or infinite; the message names the step.
    """
    _check_settings(num_steps, rho, s_churn, s_tmin, s_tmax, s_noise)
    values = check_sigmas(sigmas, NAME, min_levels=2)
    if not isinstance(score_fn, SigmaScore):
        raise ValueError(
            f"{NAME} evaluates the score at sigmas of its own grid and above them (churn), which a level-indexed "
            "score function cannot do: pass a SigmaScore (for NCSNv2 sigma_scaled_score(net.unscaled)); NCSN's "
            "networks sample with AnnealedLangevin, ConsistentAnnealed, PredictorCorrector or ProbabilityFlowODE."
        )
    noise_fn = noise_fn or torch.randn_like
    grid, _ = ode_grid(values, num_steps=num_steps, rho=rho, spacing="karras")
    times = [*grid, 0.0] if denoise else grid
    gamma_max = churn_gamma(num_steps, s_churn)
    watch = DivergenceWatch(x, NAME, "Use more steps, less churn, or check the score network.")
    for i, (t_cur, t_next) in enumerate(zip(times[:-1], times[1:], strict=True)):
        # churn: raise the noise from t_cur to t_hat
        gamma = gamma_max if s_tmin <= t_cur <= s_tmax else 0.0
        t_hat = t_cur * (1 + gamma)
        noise = None
        if gamma > 0:
            noise = noise_fn(x)
            x = x + math.sqrt(t_hat**2 - t_cur**2) * s_noise * noise
        # Euler step from t_hat
        score = score_at(score_fn, x, None, t_hat)
        d_cur = -t_hat * score
        x_next = x + (t_next - t_hat) * d_cur
        # Heun's second-order correction, except on the step to sigma = 0
        heun = t_next > 0
        if heun:
            d_next = -t_next * score_at(score_fn, x_next, None, t_next)
            x_next = x + (t_next - t_hat) * (0.5 * d_cur + 0.5 * d_next)
        x = x_next
        watch.update(x, i, 0, t_hat)
        if callback is not None:
            kind = "heun" if heun else "euler"
            callback(LangevinStep(i, 0, t_hat, t_hat * (t_hat - t_next), x, score, noise, kind, 1 + heun))
        watch.check()
    watch.check(final=True)
    return x


@dataclass(frozen=True)
class EDMStochastic(Sampler):
    """EDM's stochastic sampler (Karras et al. 2022, Algorithm 2: Heun's method with churn) on the VE schedule as a
    sampler setting.

    :meth:`sample` runs :func:`edm_stochastic` with these settings on EDM's grid between the ends of the trained
    schedule, which needs a network that takes any sigma (NCSNv2: ``sigma_scaled_score(net.unscaled)``).
    Defaults: the stochastic setting of EDM's README (ImageNet-64: 256 steps, S_churn 40, S_min 0.05, S_max 50,
    S_noise 1.003) with the churn window halved, since EDM's data lie in [-1, 1] and NCSN's in [0, 1] (a noise of
    sigma on the one is sigma / 2 on the other).
    """

    num_steps: int = 256
    """N, the sigmas of EDM's grid from sigma_max to sigma_min (NFE 2N - 1 with ``denoise``)."""
    rho: float = 7.0
    """The exponent of EDM's grid (Eq. 5)."""
    s_churn: float = 40.0
    """S_churn: ``gamma = min(S_churn / N, sqrt(2) - 1)`` at the sigmas in the window; 0 is Algorithm 1."""
    s_tmin: float = 0.025
    """S_tmin, the smallest sigma that gets churn, in the data's units (EDM's 0.05 for data in [-1, 1])."""
    s_tmax: float = 25.0
    """S_tmax, the largest sigma that gets churn (EDM's 50 for data in [-1, 1])."""
    s_noise: float = 1.003
    """S_noise, the scale of the churn noise."""
    denoise: bool = True
    """End with the Euler step to sigma = 0, the denoising step (EDM's ``t_N = 0``)."""

    function = staticmethod(edm_stochastic)
    start: ClassVar[Literal["uniform", "gaussian"]] = "gaussian"

    def __post_init__(self) -> None:
        _check_settings(self.num_steps, self.rho, self.s_churn, self.s_tmin, self.s_tmax, self.s_noise)

    def nfe(self, num_scales: int) -> int:
        """Two evaluations per step (Heun), one on the step to 0: ``2N - 1`` with ``denoise``, else ``2 (N - 1)``."""
        return 2 * (self.num_steps - 1) + int(self.denoise)
