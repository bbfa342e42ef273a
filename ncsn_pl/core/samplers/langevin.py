"""Langevin and annealed Langevin dynamics (pure PyTorch).

All samplers follow the official NCSN code's convention (ermongroup/ncsn ``runners/anneal_runner.py``,
``anneal_Langevin_dynamics``): ``x <- x + a s + sqrt(2a) z``. The NCSN paper's Algorithm 1 writes ``a/2`` and
``sqrt(a)``; its ``epsilon`` is twice this ``step_lr``.

The Gaussian noise ``z`` comes from ``noise_fn(x)`` (default ``torch.randn_like``), as k-diffusion's
``noise_sampler`` and EDM's ``randn_like``: :func:`ncsn_pl.core.seeding.noise_from` pins it to a generator,
:class:`ncsn_pl.core.seeding.PerSampleNoise` seeds every sample on its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from ncsn_pl.core.losses import ScoreFn
from ncsn_pl.core.samplers.base import (
    AUTO,
    DivergenceWatch,
    LangevinCallback,
    LangevinStep,
    NoiseFn,
    RangeWatch,
    Sampler,
    check_int,
    check_sigmas,
    check_step,
    seeded_sample,
)
from ncsn_pl.core.scores import AnyScoreFn, level_score
from ncsn_pl.core.sigmas import langevin_step_lr

__all__ = [
    "AnnealedLangevin",
    "annealed_langevin_dynamics",
    "denoise_step",
    "langevin_dynamics",
    "seeded_annealed_langevin",
    "step_sizes",
]


ADVICE = "Lower step_lr or check the score network."


def step_sizes(sigmas: torch.Tensor, step_lr: float) -> torch.Tensor:
    """Per-level Langevin steps ``a_i = step_lr * sigma_i^2 / sigma_L^2`` (NCSN Algorithm 1)."""
    return step_lr * (sigmas.double() / sigmas[-1].double()) ** 2


def _langevin_update(
    score_fn: ScoreFn,
    x: torch.Tensor,
    levels: torch.Tensor,
    step_size: float,
    noise_fn: NoiseFn,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One update ``x + a s(x) + sqrt(2a) z``; returns the new x, the score and the noise."""
    noise = noise_fn(x)
    score = score_fn(x, levels)
    return x + step_size * score + (2 * step_size) ** 0.5 * noise, score, noise


@torch.no_grad()
def langevin_dynamics(
    score_fn: ScoreFn,
    x: torch.Tensor,
    *,
    level: int = 0,
    n_steps: int = 200,
    step_size: float = 5e-5,
    noise_fn: NoiseFn | None = None,
    callback: LangevinCallback | None = None,
) -> torch.Tensor:
    """Plain Langevin dynamics at one noise level: ``x <- x + a s(x, level) + sqrt(2a) z`` for ``n_steps`` steps.

    On N(0, 1) with the exact score ``-x`` its stationary variance is ``1 / (1 - a/2)``.

    Args:
        score_fn: ``score_fn(x, levels)``.
        x: the starting samples, shape ``(B, ...)``.
        level: the noise level passed to ``score_fn`` at every step.
        n_steps: the number of updates (200 in the official ``Langevin_dynamics``).
        step_size: the step a (5e-5 in the official code).
        noise_fn: draws the noise z shaped like x (default ``torch.randn_like``).
        callback: called with a :class:`LangevinStep` after every update.

    Returns:
        The samples after ``n_steps`` updates.
    """
    noise_fn = noise_fn or torch.randn_like
    levels = torch.full((x.shape[0],), level, dtype=torch.long, device=x.device)
    watch = DivergenceWatch(x, "Langevin sampling", ADVICE)
    for step in range(n_steps):
        x, score, noise = _langevin_update(score_fn, x, levels, step_size, noise_fn)
        watch.update(x, level, step, float("nan"))
        if callback is not None:
            callback(LangevinStep(level, step, float("nan"), step_size, x, score, noise, "langevin"))
        watch.check()
    watch.check(final=True)
    return x


@torch.no_grad()
def denoise_step(score_fn: ScoreFn, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """NCSNv2's final denoising step ``x + sigma_L^2 s(x, L-1)`` (Tweedie's formula; Song & Ermon 2020, §4).

    For Gaussian data and the exact score this is the posterior mean ``E[x_0 | x]``.
    """
    levels = torch.full((x.shape[0],), sigmas.shape[0] - 1, dtype=torch.long, device=x.device)
    return x + sigmas[-1:].to(x.dtype) ** 2 * score_fn(x, levels)


@torch.no_grad()
def annealed_langevin_dynamics(
    score_fn: ScoreFn,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    n_steps_each: int = 100,
    step_lr: float = 2e-5,
    denoise: bool = False,
    noise_fn: NoiseFn | None = None,
    callback: LangevinCallback | None = None,
) -> torch.Tensor:
    """Annealed Langevin dynamics (NCSN, Song & Ermon 2019, Algorithm 1, in the official code's convention).

    For each level ``i = 0 .. L-1`` (largest sigma first), ``n_steps_each`` times:
    ``x <- x + a_i s(x, i) + sqrt(2 a_i) z`` with ``a_i = step_lr * sigma_i^2 / sigma_L^2`` and ``z ~ N(0, I)``.
    With ``denoise`` the NCSNv2 step ``x <- x + sigma_L^2 s(x, L-1)`` follows. Nothing is clamped.

    Args:
        score_fn: ``score_fn(x, levels)``.
        x: the starting samples, shape ``(B, ...)`` (the papers draw them from U[0, 1]).
        sigmas: the descending schedule, shape ``(L,)``.
        n_steps_each: T, the steps per level (100 in NCSN, 5 in NCSNv2 CIFAR-10).
        step_lr: epsilon in the code's convention (2e-5 in NCSN, 6.2e-6 in NCSNv2 CIFAR-10).
        denoise: apply NCSNv2's final denoising step.
        noise_fn: draws the noise z shaped like x (default ``torch.randn_like``).
        callback: called with a :class:`LangevinStep` after every update.

    Returns:
        The samples, shaped like ``x``.

    Raises:
        FloatingPointError: the samples became NaN or infinite; the message names the level and step.
    """
    if n_steps_each < 1:
        raise ValueError(f"n_steps_each must be >= 1, got {n_steps_each}.")
    if not step_lr > 0:
        raise ValueError(f"step_lr must be positive, got {step_lr}.")
    noise_fn = noise_fn or torch.randn_like
    steps = step_sizes(sigmas, step_lr).tolist()
    sigma_values = sigmas.tolist()
    watch = DivergenceWatch(x, "Langevin sampling", ADVICE)
    for level, (sigma, step_size) in enumerate(zip(sigma_values, steps, strict=True)):
        levels = torch.full((x.shape[0],), level, dtype=torch.long, device=x.device)
        for step in range(n_steps_each):
            # Langevin update at this level
            x, score, noise = _langevin_update(score_fn, x, levels, step_size, noise_fn)
            watch.update(x, level, step, sigma)
            if callback is not None:
                callback(LangevinStep(level, step, sigma, step_size, x, score, noise, "langevin"))
        # a device sync every few levels: stop soon after the samples diverged
        watch.check()
    watch.check(final=True)
    if denoise:
        # NCSNv2's denoising step (Tweedie's formula) at the last level
        last = len(sigma_values) - 1
        levels = torch.full((x.shape[0],), last, dtype=torch.long, device=x.device)
        score = score_fn(x, levels)
        x = x + sigmas[-1:].to(x.dtype) ** 2 * score
        if callback is not None:
            sigma = sigma_values[-1]
            callback(LangevinStep(last, n_steps_each, sigma, sigma**2, x, score, None, "denoise"))
    return x


@torch.no_grad()
def seeded_annealed_langevin(
    score_fn: ScoreFn,
    sigmas: torch.Tensor,
    data_shape: Sequence[int],
    seeds: Sequence[int],
    *,
    init_range: tuple[float, float] = (0.0, 1.0),
    n_steps_each: int = 100,
    step_lr: float = 2e-5,
    denoise: bool = False,
    callback: LangevinCallback | None = None,
) -> torch.Tensor:
    """Annealed Langevin dynamics for ``len(seeds)`` samples, sample ``i`` drawn from its own noise stream ``seeds[i]``.

    Sample ``i`` starts at ``x_0 ~ U[init_range]`` (the papers' U[0, 1]) drawn from its stream, and every noise
    ``z`` of its updates comes from the same stream (:class:`~ncsn_pl.core.seeding.PerSampleNoise`), so the
    result does not depend on which other seeds share the batch.

    Args:
        score_fn: ``score_fn(x, levels)``; it runs on ``sigmas.device``.
        sigmas: the descending schedule, shape ``(L,)``.
        data_shape: the shape of one sample, e.g. ``(3, 32, 32)``.
        seeds: one seed per sample (:func:`~ncsn_pl.core.seeding.sample_seeds`).
        init_range: ``(low, high)`` of the uniform start.
        n_steps_each: T, the steps per level.
        step_lr: epsilon in the official code's convention.
        denoise: apply NCSNv2's final denoising step.
        callback: called with a :class:`LangevinStep` after every update.

    Returns:
        The samples, shape ``(len(seeds), *data_shape)``, on ``sigmas.device``.
    """
    sampler = AnnealedLangevin(n_steps_each=n_steps_each, step_lr=step_lr, denoise=denoise)
    watch = RangeWatch(init_range, sigmas.device)  # read by no one: this function never warned about the range
    return seeded_sample(sampler, score_fn, sigmas, data_shape, seeds, init_range=init_range, callback=callback,
                         range_watch=watch)  # fmt: skip


@dataclass(frozen=True)
class AnnealedLangevin(Sampler):
    """Annealed Langevin dynamics (NCSN, Song & Ermon 2019, Algorithm 1) as a sampler setting.

    :meth:`sample` runs :func:`annealed_langevin_dynamics` with these settings, in the official code's convention:
    ``x <- x + a_i s(x, i) + sqrt(2 a_i) z`` ``n_steps_each`` times per level, ``a_i = step_lr sigma_i^2 /
    sigma_L^2`` (ermongroup/ncsn ``runners/anneal_runner.py``, ``anneal_Langevin_dynamics``); with ``denoise``
    NCSNv2's final step ``x + sigma_L^2 s(x, L-1)`` (ermongroup/ncsnv2 ``models/__init__.py``).
    """

    n_steps_each: int = 100
    """T, the Langevin steps per noise level (100 in NCSN, 5 in NCSNv2 CIFAR-10)."""
    step_lr: float | Literal["auto"] = 2e-5
    """epsilon in the official code's convention (2e-5 in NCSN, 6.2e-6 in NCSNv2 CIFAR-10), or ``auto``: NCSNv2's
    Technique 4 for T = ``n_steps_each`` on the schedule sampled (:func:`~ncsn_pl.core.sigmas.langevin_step_lr`)."""
    denoise: bool = False
    """NCSNv2's final denoising step (one more score evaluation; off in NCSN, on in every NCSNv2 config)."""

    start: ClassVar[Literal["uniform", "gaussian"]] = "uniform"

    def __post_init__(self) -> None:
        check_int("AnnealedLangevin.n_steps_each", self.n_steps_each, 1)
        check_step("AnnealedLangevin.step_lr", self.step_lr, "2e-5 in NCSN")

    def resolve(self, sigmas: torch.Tensor) -> AnnealedLangevin:
        """``step_lr="auto"``: NCSNv2's Technique 4 for ``n_steps_each`` on ``sigmas``."""
        if self.step_lr != AUTO:
            return self
        return dataclasses.replace(self, step_lr=langevin_step_lr(sigmas, self.n_steps_each))

    def sample(
        self,
        score_fn: AnyScoreFn,
        x: torch.Tensor,
        sigmas: torch.Tensor,
        *,
        noise_fn: NoiseFn | None = None,
        callback: LangevinCallback | None = None,
    ) -> torch.Tensor:
        check_sigmas(sigmas, "AnnealedLangevin")
        return annealed_langevin_dynamics(
            level_score(score_fn, sigmas),
            x,
            sigmas,
            n_steps_each=self.n_steps_each,
            step_lr=self.resolve(sigmas).step_lr,
            denoise=self.denoise,
            noise_fn=noise_fn,
            callback=callback,
        )

    def nfe(self, num_scales: int) -> int:
        """``L T``, plus one with ``denoise``."""
        return num_scales * self.n_steps_each + int(self.denoise)
