"""The probability-flow ODE of the VE SDE (Song et al., ICLR 2021, Eq. 13), solved with Euler's or Heun's method
(Karras, Aittala, Aila, Laine, NeurIPS 2022, "Elucidating the design space of diffusion-based generative models",
Algorithm 1).

In sigma time the VE SDE's flow is ``dx/dsigma = -sigma s(x, sigma)``: EDM's ``dx/dt = (x - D(x; t)) / t`` with the
denoiser ``D(x; sigma) = x + sigma^2 s(x, sigma)``. It maps ``p_{sigma_max}`` to ``p_{sigma_min}`` deterministically.
Official code: NVlabs/edm ``generate.py`` ``edm_sampler`` (with ``S_churn = 0``), k-diffusion ``sampling.py``
``sample_euler`` / ``sample_heun``; score_sde_pytorch ``sampling.py`` ``get_ode_sampler`` solves the same ODE in t
with RK45.
"""

from __future__ import annotations

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
from ncsn_pl.core.scores import AnyScoreFn, SigmaScore, score_at
from ncsn_pl.core.sigmas import geometric_sigmas, karras_sigmas

__all__ = ["ProbabilityFlowODE", "ode_grid", "probability_flow_ode"]

NAME = "Probability-flow ODE"
Solver = Literal["euler", "heun"]
Spacing = Literal["karras", "geometric"]


def _check_settings(solver: str, num_steps: int | None, level_stride: int, rho: float, spacing: str) -> None:
    if solver not in ("euler", "heun"):
        raise ValueError(f"ProbabilityFlowODE.solver must be 'euler' or 'heun', got {solver!r}.")
    check_int("ProbabilityFlowODE.level_stride", level_stride, 1)
    if num_steps is not None:
        check_int("ProbabilityFlowODE.num_steps", num_steps, 2)
        if level_stride != 1:
            raise ValueError(
                "ProbabilityFlowODE: level_stride thins the trained levels and num_steps replaces them by a grid of "
                f"its own; set one of them (got num_steps={num_steps}, level_stride={level_stride})."
            )
    if not rho > 0:
        raise ValueError(f"ProbabilityFlowODE.rho must be positive (7 in EDM), got {rho}.")
    if spacing not in ("karras", "geometric"):
        raise ValueError(f"ProbabilityFlowODE.spacing must be 'karras' or 'geometric', got {spacing!r}.")


def ode_grid(
    sigmas: list[float],
    *,
    num_steps: int | None = None,
    level_stride: int = 1,
    rho: float = 7.0,
    spacing: Spacing = "karras",
) -> tuple[list[float], list[int | None]]:
    """The sigmas the ODE steps through and the trained level of each (None off the trained schedule).

    Without ``num_steps``: the trained levels ``0, k, 2k, ...`` for ``level_stride = k``, always ending with the
    last level. With ``num_steps = N``: N sigmas from ``sigma_max`` to ``sigma_min`` of the schedule, spaced as EDM
    (:func:`~ncsn_pl.core.sigmas.karras_sigmas`) or geometrically (uniform t of score_sde's VE SDE).
    """
    if num_steps is None:
        levels = list(range(0, len(sigmas), level_stride))
        if levels[-1] != len(sigmas) - 1:
            levels.append(len(sigmas) - 1)
        return [sigmas[i] for i in levels], list(levels)
    make = karras_sigmas if spacing == "karras" else geometric_sigmas
    extra = {"rho": rho} if spacing == "karras" else {}
    grid = make(sigmas[0], sigmas[-1], num_steps, **extra).double()
    # the ends exactly as the schedule's (float32 rounding aside)
    grid[0], grid[-1] = sigmas[0], sigmas[-1]
    return grid.tolist(), [None] * num_steps


@torch.no_grad()
def probability_flow_ode(
    score_fn: AnyScoreFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    solver: Solver = "heun",
    num_steps: int | None = None,
    level_stride: int = 1,
    rho: float = 7.0,
    spacing: Spacing = "karras",
    denoise: bool = True,
    noise_fn: NoiseFn | None = None,
    callback: LangevinCallback | None = None,
) -> Tensor:
    """Integrate ``dx/dsigma = -sigma s(x, sigma)`` from ``sigma_max`` down the grid :func:`ode_grid`.

    With ``t_0 > ... > t_{N-1}`` the grid, and ``t_N = 0`` appended with ``denoise``, each step is EDM's
    Algorithm 1 (deterministic): ``d_i = -t_i s(x_i, t_i)``, ``x_{i+1} = x_i + (t_{i+1} - t_i) d_i`` (Euler), and for
    Heun, unless ``t_{i+1} = 0``: ``x_{i+1} = x_i + (t_{i+1} - t_i) (d_i + d'_{i+1}) / 2`` with
    ``d'_{i+1} = -t_{i+1} s(x_{i+1}, t_{i+1})`` at the Euler point. The Euler step to 0 is the denoising step
    ``x + t_{N-1}^2 s(x, t_{N-1})`` (Tweedie's formula, NCSNv2's last step). Deterministic: no noise is drawn.

    Args:
        score_fn: ``score_fn(x, levels)`` on ``sigmas`` (the trained grid, possibly thinned by ``level_stride``),
            or a :class:`~ncsn_pl.core.scores.SigmaScore` (any grid). NCSNv2 is one with
            :func:`~ncsn_pl.core.scores.sigma_scaled_score` ``(net.unscaled)``: its output before the division
            by sigma, divided by any sigma.
        x: the start, shape ``(B, ...)``: a draw of ``p_{sigma_max}``, ``N(0, sigma_max^2 I)`` for data small
            against sigma_max (score_sde's prior; EDM's ``latents * t_0``).
        sigmas: the trained schedule, descending, shape ``(L,)`` with ``L >= 2``.
        solver: ``euler`` (one evaluation per step) or ``heun`` (two, one on the step to 0).
        num_steps: N sigmas of a grid of their own between ``sigma_max`` and ``sigma_min`` of the schedule (needs a
            SigmaScore); None steps through the trained levels.
        level_stride: on the trained grid, every k-th level (the last is always kept), trading accuracy for NFE.
        rho: the exponent of EDM's grid for ``num_steps`` (7 in EDM).
        spacing: the grid for ``num_steps``: ``karras`` (EDM, Eq. 5) or ``geometric``.
        denoise: end at sigma = 0 with the denoising step (EDM's ``t_N = 0``); else end at ``sigma_min``.
        noise_fn: unused (the ODE is deterministic); accepted so that every sampler has one calling convention.
        callback: called with a :class:`~ncsn_pl.core.samplers.LangevinStep` after every step.

    Returns:
        The samples, shaped like ``x``.

    Raises:
        ValueError: a grid of fewer than two sigmas, or ``num_steps`` with a level-indexed score function.
        FloatingPointError: the samples became NaN or infinite; the message names the level and step.
    """
    _check_settings(solver, num_steps, level_stride, rho, spacing)
    values = check_sigmas(sigmas, "ProbabilityFlowODE", min_levels=2)
    if num_steps is not None and not isinstance(score_fn, SigmaScore):
        raise ValueError(
            f"ProbabilityFlowODE with num_steps={num_steps} evaluates the score between the trained levels, which a "
            "level-indexed score function cannot do: use num_steps=None (with level_stride to skip levels), or pass "
            "a SigmaScore (for NCSNv2 sigma_scaled_score(net.unscaled))."
        )
    grid, levels = ode_grid(values, num_steps=num_steps, level_stride=level_stride, rho=rho, spacing=spacing)
    times = [*grid, 0.0] if denoise else grid
    watch = DivergenceWatch(x, NAME, "Use more steps or check the score network.")
    for i, (t_cur, t_next) in enumerate(zip(times[:-1], times[1:], strict=True)):
        level = levels[i] if levels[i] is not None else i
        # Euler step
        score = score_at(score_fn, x, levels[i], t_cur)
        d_cur = -t_cur * score
        x_next = x + (t_next - t_cur) * d_cur
        # Heun's second-order correction, except on the step to sigma = 0
        if solver == "heun" and t_next > 0:
            d_next = -t_next * score_at(score_fn, x_next, levels[i + 1], t_next)
            x_next = x + (t_next - t_cur) * (0.5 * d_cur + 0.5 * d_next)
        x = x_next
        watch.update(x, level, 0, t_cur)
        if callback is not None:
            heun = solver == "heun" and t_next > 0
            step_size = t_cur * (t_cur - t_next)
            callback(LangevinStep(level, 0, t_cur, step_size, x, score, None, "heun" if heun else "euler", 1 + heun))
        watch.check()
    watch.check(final=True)
    return x


@dataclass(frozen=True)
class ProbabilityFlowODE(Sampler):
    """The probability-flow ODE (Song et al. 2021) with Euler's or Heun's method (Karras et al. 2022) as a sampler.

    :meth:`sample` runs :func:`probability_flow_ode` with these settings (Eq. 13 of Song et al.; Algorithm 1 of
    Karras et al.); it is deterministic and does not use ``noise_fn``.

    For level-indexed networks (NCSN) it steps through the trained levels, every ``level_stride``-th; for a
    :class:`~ncsn_pl.core.scores.SigmaScore` (NCSNv2: ``sigma_scaled_score(net.unscaled)``) also through a grid of
    ``num_steps`` sigmas of its own.
    """

    solver: Solver = "heun"
    """``heun`` (EDM's second-order method, Algorithm 1) or ``euler``."""
    num_steps: int | None = None
    """N sigmas of a grid of their own from sigma_max to sigma_min (18 in EDM for CIFAR-10; needs a SigmaScore);
    None: the trained levels."""
    level_stride: int = 1
    """On the trained levels, take every k-th (the last always): fewer evaluations, larger steps."""
    rho: float = 7.0
    """The exponent of EDM's grid (Eq. 5) for ``num_steps`` with ``spacing='karras'``."""
    spacing: Spacing = "karras"
    """The grid for ``num_steps``: ``karras`` (EDM) or ``geometric`` (uniform t of the VE SDE, as score_sde)."""
    denoise: bool = True
    """End with the Euler step to sigma = 0, the denoising step ``x + sigma_min^2 s`` (EDM's ``t_N = 0``)."""

    function = staticmethod(probability_flow_ode)
    start: ClassVar[Literal["uniform", "gaussian"]] = "gaussian"

    def __post_init__(self) -> None:
        _check_settings(self.solver, self.num_steps, self.level_stride, self.rho, self.spacing)

    def nfe(self, num_scales: int) -> int:
        """One evaluation per step (Euler) or two (Heun), one on the step to 0: ``2N - 1`` for Heun with denoise,
        N the grid length (``num_steps``, or the trained levels kept by ``level_stride``)."""
        if self.num_steps is not None:
            points = self.num_steps
        else:
            points = len(range(0, num_scales, self.level_stride)) + int((num_scales - 1) % self.level_stride != 0)
        return (points - 1) * (2 if self.solver == "heun" else 1) + int(self.denoise)
