"""Consistent annealed sampling (CAS; Jolicoeur-Martineau, Piche-Taillefer, Tachet des Combes, Mitliagkas, ICLR 2021,
"Adversarial score matching and improved sampling for image generation", its Consistent Annealed Sampling
algorithm).

Annealed Langevin dynamics does not keep the noise of its samples at the level the score is evaluated at; CAS takes
one score step per level and adds just the noise that brings the samples' noise to the next level. With an exact
score on data concentrated at one point, ``x - x_0`` has standard deviation exactly ``sigma_i`` at every level.
Official code: AlexiaJM/AdversarialConsistentScoreMatching ``models/__init__.py``,
``anneal_Langevin_dynamics_consistent`` and ``compute_beta``; the grid with ``nsigma`` steps per level is
``runners/abc_runner.py`` ``get_sigma``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor

from ncsn_pl.core.samplers.base import (
    AUTO,
    DivergenceWatch,
    LangevinCallback,
    LangevinStep,
    NoiseFn,
    Sampler,
    check_int,
    check_sigmas,
    check_step,
)
from ncsn_pl.core.scores import AnyScoreFn, SigmaScore, score_at

__all__ = ["ConsistentAnnealed", "consistent_annealed_sampling", "consistent_grid", "consistent_step_lr_range"]

NAME = "Consistent annealed sampling"


def consistent_grid(sigmas: list[float], n_steps_each: int) -> list[tuple[int, int, float]]:
    """The levels CAS visits, as ``(level, step, sigma)``: ``n_steps_each`` geometrically spaced sigmas from each
    trained ``sigma_i`` down to (not including) ``sigma_{i+1}``, then ``sigma_L``; ``(L-1) n_steps_each + 1`` in all.

    On a geometric schedule this is the authors' ``np.geomspace(sigma_begin, sigma_end, (L-1) nsigma + 1)``
    (``runners/abc_runner.py``, ``get_sigma``); on any other schedule it refines each interval geometrically.
    """
    grid = [
        (level, step, sigma * (following / sigma) ** (step / n_steps_each))
        for level, (sigma, following) in enumerate(zip(sigmas[:-1], sigmas[1:], strict=True))
        for step in range(n_steps_each)
    ]
    return [*grid, (len(sigmas) - 1, 0, sigmas[-1])]


def consistent_ancestral_step_lr(sigmas: list[float], n_steps_each: int = 1) -> float:
    """The ``step_lr`` whose ``eta = step_lr / sigma_L^2 = 1 - gamma^-2`` (``gamma`` the largest ratio of the grid):
    the largest step that keeps the noise consistent, where one CAS step is ancestral sampling between two levels
    (``beta = sqrt(1 - gamma^-2)``, Jolicoeur-Martineau et al. 2021, Section 4)."""
    grid = [sigma for _, _, sigma in consistent_grid(sigmas, n_steps_each)]
    gamma = max(a / b for a, b in zip(grid[:-1], grid[1:], strict=True))
    return sigmas[-1] ** 2 * (1 - gamma**-2)


def consistent_step_lr_range(sigmas: list[float], n_steps_each: int = 1) -> tuple[float, float]:
    """The open interval of ``step_lr`` for which CAS is defined on this schedule.

    ``beta_i = sqrt(1 - gamma_i^2 (1 - eta)^2)`` is real and positive iff ``|1 - eta| < 1 / gamma_i`` for every
    ratio ``gamma_i = sigma_i / sigma_{i+1} > 1`` of the grid, so with ``eta = step_lr / sigma_L^2``:
    ``sigma_L^2 (1 - 1/gamma) < step_lr < sigma_L^2 (1 + 1/gamma)``, ``gamma`` the largest ratio (the authors'
    ``lowerbound`` and ``higherbound``, which use the last ratio of their geometric grid).
    """
    grid = [sigma for _, _, sigma in consistent_grid(sigmas, n_steps_each)]
    inverse_gamma = min(b / a for a, b in zip(grid[:-1], grid[1:], strict=True))
    return sigmas[-1] ** 2 * (1 - inverse_gamma), sigmas[-1] ** 2 * (1 + inverse_gamma)


def _check_inputs(score_fn: AnyScoreFn, sigmas: Tensor, n_steps_each: int, step_lr: float) -> list[float]:
    check_int("ConsistentAnnealed.n_steps_each", n_steps_each, 1)
    values = check_sigmas(sigmas, "ConsistentAnnealed", min_levels=2)
    if n_steps_each > 1 and not isinstance(score_fn, SigmaScore):
        raise ValueError(
            f"ConsistentAnnealed with n_steps_each={n_steps_each} visits sigmas between the trained levels, which a "
            "level-indexed score function cannot evaluate: set n_steps_each=1, or pass a SigmaScore (for NCSNv2 "
            "sigma_scaled_score(net.unscaled))."
        )
    low, high = consistent_step_lr_range(values, n_steps_each)
    if not low < step_lr < high:
        raise ValueError(
            f"ConsistentAnnealed: step_lr={step_lr:.4g} leaves the consistent noise undefined on this schedule; "
            f"choose step_lr in ({low:.4g}, {high:.4g}), i.e. eta = step_lr / sigma_min^2 within 1 -+ the smallest "
            f"ratio sigma_(i+1) / sigma_i of the grid."
        )
    return values


@torch.no_grad()
def consistent_annealed_sampling(
    score_fn: AnyScoreFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    n_steps_each: int = 1,
    step_lr: float = 1.8e-5,
    denoise: bool = True,
    noise_fn: NoiseFn | None = None,
    callback: LangevinCallback | None = None,
) -> Tensor:
    """Consistent annealed sampling (Jolicoeur-Martineau et al. 2021, the CAS algorithm, as the official code runs it).

    On the grid :func:`consistent_grid` ``sigma_0 > ... > sigma_{M-1}`` with ``eta = step_lr / sigma_{M-1}^2``:
    ``x <- x + eta sigma_j^2 s(x, sigma_j) + beta_j sigma_{j+1} z`` with
    ``beta_j = sqrt(1 - (1 - eta)^2 sigma_j^2 / sigma_{j+1}^2)`` (NCSNv2's ratio ``gamma = sigma_j / sigma_{j+1}``;
    the authors' ``compute_beta(eta, sigma_{j+1} / sigma_j)``), and no noise after the last level. If the noise
    of ``x`` has standard deviation ``sigma_j`` and the score is exact, the score step leaves ``(1 - eta) sigma_j``
    and the noise step restores ``sigma_{j+1}``. The step is ``eta sigma^2 s``: the authors' network returns
    ``sigma s`` and they step ``eta sigma (sigma s)``; ``step_lr`` means what it means in annealed Langevin
    dynamics (``a_i = step_lr sigma_i^2 / sigma_L^2``).

    With ``denoise`` the last level takes the full step ``sigma_L^2 s`` instead of ``eta sigma_L^2 s``: the
    authors' ``denoised_x`` (Tweedie's formula), from the same score evaluation.

    Args:
        score_fn: ``score_fn(x, levels)`` on ``sigmas`` (then ``n_steps_each`` must be 1) or a
            :class:`~ncsn_pl.core.scores.SigmaScore`.
        x: the start, shape ``(B, ...)`` (U[0, 1] in the authors' code).
        sigmas: the trained schedule, descending, shape ``(L,)`` with ``L >= 2``.
        n_steps_each: steps per trained level (the authors' ``nsigma``): ``(L-1) n_steps_each + 1`` levels.
        step_lr: the step at the smallest sigma; must lie in :func:`consistent_step_lr_range`.
        denoise: end with the full Tweedie step at the last level.
        noise_fn: draws the noise z shaped like x (default ``torch.randn_like``).
        callback: called with a :class:`~ncsn_pl.core.samplers.LangevinStep` after every update.

    Returns:
        The samples, shaped like ``x``.

    Raises:
        ValueError: fewer than two levels, a refined grid with a level-indexed score, or ``step_lr`` out of range.
        FloatingPointError: the samples became NaN or infinite; the message names the level and step.
    """
    values = _check_inputs(score_fn, sigmas, n_steps_each, step_lr)
    noise_fn = noise_fn or torch.randn_like
    grid = consistent_grid(values, n_steps_each)
    eta = step_lr / values[-1] ** 2
    watch = DivergenceWatch(x, NAME, "Check step_lr and the score network.")
    for j, (level, step, sigma) in enumerate(grid):
        last = j == len(grid) - 1
        # score step: eta sigma^2 s, or Tweedie's sigma_L^2 s at the last level with denoise
        score = score_at(score_fn, x, level if step == 0 else None, sigma)
        step_size = sigma**2 if last and denoise else eta * sigma**2
        x = x + step_size * score
        # consistent noise: from (1 - eta) sigma_j to sigma_{j+1}; none after the last level
        noise = None
        if not last:
            next_sigma = grid[j + 1][2]
            beta = math.sqrt(1 - ((1 - eta) * sigma / next_sigma) ** 2)
            noise = noise_fn(x)
            x = x + beta * next_sigma * noise
        watch.update(x, level, step, sigma)
        if callback is not None:
            callback(LangevinStep(level, step, sigma, step_size, x, score, noise, "consistent"))
        watch.check()
    watch.check(final=True)
    return x


@dataclass(frozen=True)
class ConsistentAnnealed(Sampler):
    """Consistent annealed sampling (Jolicoeur-Martineau et al. 2021) as a sampler setting.

    :meth:`sample` runs :func:`consistent_annealed_sampling` with these settings. For NCSN's level-indexed networks
    it runs on the trained levels (``n_steps_each=1``); for NCSNv2 with
    :func:`~ncsn_pl.core.scores.sigma_scaled_score` also on a finer geometric grid.
    """

    n_steps_each: int = 1
    """Steps per trained level (the authors' ``nsigma``; 1 in their README, 5 in ``configs/cifar10_9999ema.yml``).
    Above 1 the grid has sigmas between the trained ones, so the score must be a SigmaScore."""
    step_lr: float | Literal["auto"] = AUTO
    """The step at the smallest sigma, ``eta sigma_L^2``. ``auto`` (the default) takes
    :func:`consistent_ancestral_step_lr` of the schedule sampled, ``eta = 1 - gamma^-2``: the largest step that keeps
    the noise consistent, defined on every schedule. A number must lie in :func:`consistent_step_lr_range` of the
    schedule, checked when sampling; the authors tune it by hand (1.8e-5 in their README for CIFAR-10 with
    ``nsigma=1`` and sigma_L = 0.01, eta = 0.18, which is out of range on NCSN's 10 levels)."""
    denoise: bool = True
    """End with Tweedie's step ``sigma_L^2 s`` at the last level, from the same evaluation (the denoised samples
    the paper evaluates)."""

    function = staticmethod(consistent_annealed_sampling)
    start: ClassVar[Literal["uniform", "gaussian"]] = "uniform"

    def __post_init__(self) -> None:
        check_int("ConsistentAnnealed.n_steps_each", self.n_steps_each, 1)
        check_step("ConsistentAnnealed.step_lr", self.step_lr, "1.8e-5 in the paper")

    def resolve(self, sigmas: Tensor) -> ConsistentAnnealed:
        """``step_lr="auto"``: :func:`consistent_ancestral_step_lr` of ``sigmas`` refined ``n_steps_each`` times."""
        if self.step_lr != AUTO:
            return self
        values = check_sigmas(sigmas, "ConsistentAnnealed", min_levels=2)
        return dataclasses.replace(self, step_lr=consistent_ancestral_step_lr(values, self.n_steps_each))

    def nfe(self, num_scales: int) -> int:
        """``(L-1) n_steps_each + 1``: one evaluation per level of the grid; ``denoise`` reuses the last one."""
        return (num_scales - 1) * self.n_steps_each + 1
