"""What every sampler shares: the calling convention, the step report, the checks of the grid and of divergence."""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from ncsn_pl.core.scores import AnyScoreFn, SigmaScore
from ncsn_pl.core.seeding import PerSampleNoise

__all__ = [
    "LangevinCallback",
    "LangevinStep",
    "NoiseFn",
    "Sampler",
    "check_sampler",
    "check_sigmas",
    "describe_sampler",
    "seeded_sample",
]

NoiseFn = Callable[[Tensor], Tensor]
"""``noise_fn(x) -> z``: standard normal noise shaped like ``x`` (``torch.randn_like`` by default)."""


@dataclass(frozen=True)
class LangevinStep:
    """What a sampler reports after each update: where it is and the diagnostics people check.

    Attributes:
        level: the noise level index i (0 = largest sigma); on a grid of its own (CAS with ``n_steps_each > 1``,
            the ODE) the index of the trained level or grid point the update starts from.
        step: the step within the level, ``0 .. n_steps_each - 1`` (the predictor of a PC sampler reports
            ``n_steps_each``, after its corrector steps).
        sigma: the sigma the score was evaluated at.
        step_size: the factor of the score in the update (the Langevin step a_i; for the ODE ``sigma_i (sigma_i -
            sigma_{i+1})``; the batch mean where it differs per sample).
        x: the state after the update (do not modify it in place).
        grad_norm: batch mean of the per-sample L2 norm of the score.
        noise_norm: batch mean of the per-sample L2 norm of the noise z (0 for the deterministic ODE).
        snr: ``sqrt(step_size / 2) * grad_norm / noise_norm``, the official code's signal-to-noise diagnostic
            (NaN without noise).
        kind: which update: ``langevin``, ``consistent``, ``corrector``, ``predictor``, ``euler`` or ``heun``.
    """

    level: int
    step: int
    sigma: float
    step_size: float
    x: Tensor
    grad_norm: float
    noise_norm: float
    snr: float
    kind: str = "langevin"


LangevinCallback = Callable[[LangevinStep], None]


class Sampler(ABC):
    """The calling convention of the sampler settings classes (one frozen dataclass per sampler).

    The fields are the sampler's settings with the papers' defaults, validated on construction, so a config can
    choose a sampler by ``class_path`` and ``init_args``. Randomness enters only through ``noise_fn``.
    """

    function: ClassVar[Callable[..., Tensor]]
    """The sampler itself, ``function(score_fn, x, sigmas, *, <the fields>, noise_fn, callback)`` (a staticmethod)."""

    start: ClassVar[Literal["uniform", "gaussian"]]
    """The start the sampler's papers use: ``uniform`` is ``x ~ U[0, 1]^D`` (NCSN, NCSNv2, CAS); ``gaussian`` is
    the VE SDE's prior ``x ~ N(0, sigma_max^2 I)`` (score_sde, EDM)."""

    def sample(
        self,
        score_fn: AnyScoreFn,
        x: Tensor,
        sigmas: Tensor,
        *,
        noise_fn: NoiseFn | None = None,
        callback: LangevinCallback | None = None,
    ) -> Tensor:
        """Run the sampler from ``x`` down the descending schedule ``sigmas`` (shape ``(L,)``).

        Args:
            score_fn: ``score_fn(x, levels)`` indexing ``sigmas``, or a :class:`~ncsn_pl.core.scores.SigmaScore`.
            x: the start, shape ``(B, ...)`` (see :attr:`start`).
            sigmas: the trained schedule, descending, shape ``(L,)``.
            noise_fn: draws standard normal noise shaped like x (default ``torch.randn_like``); every random draw
                of a sampler goes through it, so :class:`~ncsn_pl.core.seeding.PerSampleNoise` seeds each sample.
            callback: called with a :class:`LangevinStep` after every update.

        Returns:
            The samples, shaped like ``x``.

        Raises:
            ValueError: the sampler cannot run on this schedule or with this kind of score function.
            FloatingPointError: the samples became NaN or infinite; the message names the sampler, level and step.
        """
        settings = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return type(self).function(score_fn, x, sigmas, **settings, noise_fn=noise_fn, callback=callback)

    @abstractmethod
    def nfe(self, num_scales: int) -> int:
        """The number of score (network) evaluations per sample on a schedule of ``num_scales`` levels."""


@torch.no_grad()
def seeded_sample(
    sampler: Sampler,
    score_fn: AnyScoreFn,
    sigmas: Tensor,
    data_shape: Sequence[int],
    seeds: Sequence[int],
    *,
    init_range: tuple[float, float] = (0.0, 1.0),
    callback: LangevinCallback | None = None,
) -> Tensor:
    """``len(seeds)`` samples of ``sampler``, sample ``i`` drawn from its own generator ``seeds[i]``.

    Sample ``i`` starts from its generator, at ``U[init_range]`` or at ``N(0, sigma_max^2 I)`` as
    :attr:`Sampler.start` says, and all its noise comes from the same generator
    (:class:`~ncsn_pl.core.seeding.PerSampleNoise`), so it does not depend on the other seeds of the batch.

    Args:
        sampler: the sampler and its settings.
        score_fn: ``score_fn(x, levels)`` or a :class:`~ncsn_pl.core.scores.SigmaScore`; it runs on
            ``sigmas.device``.
        sigmas: the descending schedule, shape ``(L,)``.
        data_shape: the shape of one sample, e.g. ``(3, 32, 32)``.
        seeds: one seed per sample (:func:`~ncsn_pl.core.seeding.sample_seeds`).
        init_range: ``(low, high)`` of a uniform start.
        callback: called with a :class:`LangevinStep` after every update.

    Returns:
        The samples, shape ``(len(seeds), *data_shape)``, on ``sigmas.device``.
    """
    shape = (len(seeds), *data_shape)
    if len(seeds) == 0:
        return torch.empty(shape, device=sigmas.device, dtype=sigmas.dtype)
    noise = PerSampleNoise(seeds, sigmas.device)
    if sampler.start == "uniform":
        low, high = init_range
        x = low + (high - low) * noise.rand(shape, dtype=sigmas.dtype)
    else:
        x = sigmas[0].item() * noise.randn(shape, dtype=sigmas.dtype)
    return sampler.sample(score_fn, x, sigmas, noise_fn=noise.randn_like, callback=callback)


def check_sigmas(sigmas: Tensor, sampler: str, min_levels: int = 1) -> list[float]:
    """The schedule as a list of floats, after checking that it is a descending 1-D grid of positive sigmas with
    at least ``min_levels`` levels; the ``ValueError`` says what to fix."""
    if sigmas.ndim != 1 or sigmas.numel() == 0:
        raise ValueError(f"{sampler}: sigmas must be a 1-D tensor of noise levels, got shape {tuple(sigmas.shape)}.")
    values = [float(s) for s in sigmas.tolist()]
    if not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"{sampler}: every sigma must be finite and positive, got {values}.")
    if any(b >= a for a, b in zip(values, values[1:], strict=False)):
        raise ValueError(f"{sampler}: sigmas must descend strictly (largest first, as NCSN indexes levels).")
    if len(values) < min_levels:
        raise ValueError(
            f"{sampler} needs a schedule of at least {min_levels} sigmas, got {len(values)}; on a single noise level "
            "use AnnealedLangevin or PredictorCorrector."
        )
    return values


def check_int(name: str, value: int, minimum: int) -> None:
    """Raise a ``ValueError`` unless ``value`` is an integer ``>= minimum`` (booleans are not integers here)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def report(
    callback: LangevinCallback,
    kind: str,
    level: int,
    step: int,
    sigma: float,
    step_size: float,
    x: Tensor,
    score: Tensor,
    noise: Tensor | None,
) -> None:
    """Compute the diagnostics of one update and pass them to ``callback`` (this syncs the device)."""
    grad_norm = score.flatten(1).norm(dim=1).mean().item()
    noise_norm = noise.flatten(1).norm(dim=1).mean().item() if noise is not None else 0.0
    snr = (step_size / 2) ** 0.5 * grad_norm / noise_norm if noise_norm > 0 else math.nan
    callback(LangevinStep(level, step, sigma, step_size, x, grad_norm, noise_norm, snr, kind))


def track_divergence(first_bad_step: Tensor, x: Tensor, step: int) -> Tensor:
    """Remember the first step whose samples are not finite, without a device sync."""
    is_new = (first_bad_step < 0) & ~torch.isfinite(x).all()
    return torch.where(is_new, torch.full_like(first_bad_step, step), first_bad_step)


def raise_if_diverged(
    first_bad_step: Tensor,
    level: int,
    sigma: float,
    sampler: str = "Langevin sampling",
    advice: str = "Lower step_lr or check the score network.",
) -> None:
    """Raise a ``FloatingPointError`` naming the sampler, level and step if a step of this level diverged (one
    device sync)."""
    step = int(first_bad_step)
    if step >= 0:
        raise FloatingPointError(
            f"{sampler} diverged: the samples became NaN or infinite at level {level} (sigma={sigma:.4g}), "
            f"step {step}. {advice}"
        )


class _Probed(Exception):
    """Raised by the probe score function: the sampler got past its checks to its first score evaluation."""


def check_sampler(sampler: Sampler, score_fn: AnyScoreFn, sigmas: Tensor) -> None:
    """Raise the ``ValueError`` ``sampler`` would raise with a score function of ``score_fn``'s kind on ``sigmas``
    (e.g. a grid of its own with a level-indexed network), without evaluating ``score_fn``: the sampler runs on an
    empty batch until its first score call."""

    def probe(x: Tensor, where: Tensor) -> Tensor:
        raise _Probed

    probe_fn: AnyScoreFn = SigmaScore(probe) if isinstance(score_fn, SigmaScore) else probe
    x = torch.zeros((1, 1), dtype=sigmas.dtype, device=sigmas.device)
    try:
        sampler.sample(probe_fn, x, sigmas)
    except _Probed:
        return


def describe_sampler(sampler: Sampler) -> dict[str, Any]:
    """The sampler as a config entry, ``{"class_path": ..., "init_args": {...}}``, for records and sample folders."""
    cls = type(sampler)
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": dataclasses.asdict(sampler)}
