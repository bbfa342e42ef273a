"""What every sampler shares: the calling convention, the step report, the checks of the grid and of divergence."""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from ncsn_pl.core.scores import AnyScoreFn, SigmaScore
from ncsn_pl.core.seeding import PerSampleNoise

__all__ = [
    "LangevinCallback",
    "LangevinStep",
    "NFECount",
    "NoiseFn",
    "RangeWatch",
    "Sampler",
    "check_sampler",
    "check_sigmas",
    "describe_sampler",
    "seeded_sample",
]

AUTO = "auto"
"""A step size given as ``"auto"``: the sampler computes it from the schedule it samples (:meth:`Sampler.resolve`)."""

NoiseFn = Callable[[Tensor], Tensor]
"""``noise_fn(x) -> z``: standard normal noise shaped like ``x`` (``torch.randn_like`` by default)."""


class LangevinStep:
    """What a sampler reports after each update: where it is and the diagnostics people check.

    The diagnostics (``grad_norm``, ``noise_norm``, ``snr``, and ``step_size`` where it differs per sample) are
    computed when first read, so a callback that does not read them adds no device sync.

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
        kind: which update: ``langevin``, ``denoise``, ``consistent``, ``corrector``, ``predictor``, ``euler``,
            ``heun`` or ``adaptive``.
        nfe: the network evaluations of this update per sample: a number (the same for every sample; 2 for Heun)
            or a ``(B,)`` tensor where samples differ (an adaptive solver's finished samples evaluate nothing).
            Summed over a run's reports it is the sampler's NFE (:class:`NFECount`).
    """

    def __init__(
        self,
        level: int,
        step: int,
        sigma: float,
        step_size: float | Tensor,
        x: Tensor,
        score: Tensor,
        noise: Tensor | None,
        kind: str = "langevin",
        nfe: int | Tensor = 1,
    ) -> None:
        self.level, self.step, self.sigma, self.x, self.kind, self.nfe = level, step, sigma, x, kind, nfe
        self._step_size, self._score, self._noise = step_size, score, noise

    @functools.cached_property
    def step_size(self) -> float:
        size = self._step_size
        return size.mean().item() if isinstance(size, Tensor) else float(size)

    @functools.cached_property
    def grad_norm(self) -> float:
        return self._score.flatten(1).norm(dim=1).mean().item()

    @functools.cached_property
    def noise_norm(self) -> float:
        return self._noise.flatten(1).norm(dim=1).mean().item() if self._noise is not None else 0.0

    @functools.cached_property
    def snr(self) -> float:
        return (self.step_size / 2) ** 0.5 * self.grad_norm / self.noise_norm if self.noise_norm > 0 else math.nan

    def __repr__(self) -> str:
        return f"LangevinStep(kind={self.kind!r}, level={self.level}, step={self.step}, sigma={self.sigma:.4g})"


LangevinCallback = Callable[[LangevinStep], None]


class NFECount:
    """The network evaluations of each sample, summed from the samplers' reports (:attr:`LangevinStep.nfe`) over
    any number of batches: :func:`seeded_sample` counts each batch it draws into one, in order."""

    def __init__(self) -> None:
        self._batches: list[Tensor] = []
        self._current: Tensor | None = None

    def begin(self, batch_size: int, device: torch.device | str) -> None:
        """Start counting a batch of ``batch_size`` samples."""
        self._current = torch.zeros(batch_size, dtype=torch.long, device=device)

    def __call__(self, step: LangevinStep) -> None:
        """The sampler callback (no device sync)."""
        self._current += step.nfe

    def end(self) -> None:
        """Close the batch."""
        self._batches.append(self._current)
        self._current = None

    @property
    def per_sample(self) -> Tensor:
        """The counts of every sample counted so far, in order, ``(N,)`` int64 on the CPU."""
        return torch.cat([b.cpu() for b in self._batches]) if self._batches else torch.zeros(0, dtype=torch.long)


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
        resolved = self.resolve(sigmas)
        settings = {f.name: getattr(resolved, f.name) for f in dataclasses.fields(resolved)}
        return type(self).function(score_fn, x, sigmas, **settings, noise_fn=noise_fn, callback=callback)

    def resolve(self, sigmas: Tensor) -> Sampler:
        """These settings with every ``"auto"`` step size computed for the schedule ``sigmas`` (the sampler itself
        when it has none); :meth:`sample` resolves them so, and records show the numbers after it."""
        return self

    @abstractmethod
    def nfe(self, num_scales: int) -> int | None:
        """The number of score (network) evaluations per sample on a schedule of ``num_scales`` levels; None when
        it differs from sample to sample (an adaptive step size): then it is counted while sampling
        (:class:`NFECount`)."""


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
    range_watch: RangeWatch | None = None,
    nfe_count: NFECount | None = None,
) -> Tensor:
    """``len(seeds)`` samples of ``sampler``, sample ``i`` drawn from its own noise stream ``seeds[i]``.

    Sample ``i`` starts from its stream, at ``U[init_range]`` or at ``N(0, sigma_max^2 I)`` as
    :attr:`Sampler.start` says, and all its noise comes from the same stream
    (:class:`~ncsn_pl.core.seeding.PerSampleNoise`), so it does not depend on the other seeds of the batch.

    Args:
        sampler: the sampler and its settings.
        score_fn: ``score_fn(x, levels)`` or a :class:`~ncsn_pl.core.scores.SigmaScore`; it runs on
            ``sigmas.device``.
        sigmas: the descending schedule, shape ``(L,)``.
        data_shape: the shape of one sample, e.g. ``(3, 32, 32)``.
        seeds: one seed per sample (:func:`~ncsn_pl.core.seeding.sample_seeds`).
        init_range: ``(low, high)`` of a uniform start, also the data's range for ``range_watch``.
        callback: called with a :class:`LangevinStep` after every update.
        range_watch: watches whether the samples end far outside ``init_range`` (:class:`RangeWatch`), for the
            caller to read once after several batches; without one, this call warns (``RuntimeWarning``) itself.
        nfe_count: counts each sample's network evaluations (this batch is added to it).

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
        x = sigmas[:1] * noise.randn(shape, dtype=sigmas.dtype)
    watch = range_watch if range_watch is not None else RangeWatch(init_range, sigmas.device)
    if nfe_count is not None:
        nfe_count.begin(len(seeds), sigmas.device)

    def watched(step: LangevinStep) -> None:
        watch(step)
        if nfe_count is not None:
            nfe_count(step)
        if callback is not None:
            callback(step)

    x = sampler.sample(score_fn, x, sigmas, noise_fn=noise.randn_like, callback=watched)
    if nfe_count is not None:
        nfe_count.end()
    watch.finish(x)
    if range_watch is None and (message := watch.message()) is not None:
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    return x


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


def check_step(name: str, value: float | str, example: str) -> None:
    """Raise a ``ValueError`` unless ``value`` is a positive number or ``"auto"``; ``example`` names the paper's."""
    if value != AUTO and (isinstance(value, (str, bool)) or not value > 0):
        raise ValueError(f"{name} must be a positive number ({example}) or 'auto', got {value!r}.")


def check_int(name: str, value: int, minimum: int) -> None:
    """Raise a ``ValueError`` unless ``value`` is an integer ``>= minimum`` (booleans are not integers here)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")


class DivergenceWatch:
    """The first update whose samples are NaN or infinite, tracked on the device.

    :meth:`update` adds no device sync; :meth:`check` reads the record (one sync) once ``check_every`` updates
    have passed since the last read, and at the end, so a diverged run stops within ``check_every`` updates.

    Args:
        x: the samples (for their device).
        sampler: the sampler's name, for the message.
        advice: what to try, for the message.
        check_every: the updates between two reads.
    """

    def __init__(self, x: Tensor, sampler: str, advice: str, check_every: int = 50) -> None:
        self.first = torch.full((), -1, dtype=torch.long, device=x.device)  # level * 2^32 + step
        self.sampler, self.advice, self.check_every = sampler, advice, check_every
        self.sigmas: dict[int, float] = {}
        self.unread = 0

    def update(self, x: Tensor, level: int, step: int, sigma: float) -> None:
        """Remember (level, step) if these are the first samples that are not finite."""
        self.sigmas.setdefault(level, sigma)
        self.first.masked_fill_((self.first < 0) & ~torch.isfinite(x).all(), (level << 32) + step)
        self.unread += 1

    def check(self, final: bool = False) -> None:
        """Raise a ``FloatingPointError`` naming the sampler, level, sigma and step if the samples diverged: at
        the end (``final``) always, else once ``check_every`` updates have passed since the last read."""
        if not final and self.unread < self.check_every:
            return
        self.unread = 0
        code = int(self.first)
        if code >= 0:
            level, step = code >> 32, code & 0xFFFFFFFF
            raise FloatingPointError(
                f"{self.sampler} diverged: the samples became NaN or infinite at level {level} "
                f"(sigma={self.sigmas[level]:.4g}), step {step}. {self.advice}"
            )


class RangeWatch:
    """Samples that end far outside the data's range, and the level where they first strayed, tracked on the
    device and read once (:meth:`message`).

    With ``c``, ``h`` and ``w`` the centre, half-width and width of ``init_range``, the samples count as strayed at
    a level when after its first update ``max |x - c| > h + 2 w + 8 sigma``, and the final samples as far out
    when they leave ``[low - 2 w, high + 2 w]``.

    Args:
        init_range: ``(low, high)``, the data's range (the uniform start of NCSN's samplers).
        device: the samples' device.
    """

    def __init__(self, init_range: tuple[float, float], device: torch.device | str) -> None:
        self.low, self.high = float(init_range[0]), float(init_range[1])
        self.first_level = torch.full((), -1, dtype=torch.long, device=device)
        self.extremes = torch.tensor([math.inf, -math.inf], device=device)  # min and max of the final samples
        self.sigmas: dict[int, float] = {}

    def __call__(self, step: LangevinStep) -> None:
        """The sampler callback: checks each level's first update (no device sync)."""
        if step.step != 0 or step.x.numel() == 0:
            return
        width = self.high - self.low
        strayed = (step.x - (self.low + self.high) / 2).abs().amax() > 2.5 * width + 8 * abs(step.sigma)
        self.sigmas.setdefault(step.level, step.sigma)
        self.first_level.masked_fill_((self.first_level < 0) & strayed, step.level)

    def finish(self, x: Tensor) -> None:
        """Take the final samples ``x`` into account (no device sync)."""
        if x.numel():
            low, high = torch.minimum(self.extremes[0], x.amin()), torch.maximum(self.extremes[1], x.amax())
            self.extremes = torch.stack([low, high])

    def message(self) -> str | None:
        """What to tell the user if the final samples are far outside the range, else None (one device sync)."""
        low, high = self.extremes.tolist()
        width = self.high - self.low
        if not math.isfinite(low) or (low >= self.low - 2 * width and high <= self.high + 2 * width):
            return None
        level = int(self.first_level)
        where = (
            f"they first strayed at level {level} (sigma={self.sigmas[level]:.4g})"
            if level >= 0
            else "they stayed near it until the last level"
        )
        return (
            f"Samples ended far outside the data's range [{self.low:g}, {self.high:g}]: values from {low:.3g} to "
            f"{high:.3g}; {where}. The score is probably wrong there: train longer (in particular at the largest "
            "sigmas), or sample with a smaller step (step_lr) or more steps per level."
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
