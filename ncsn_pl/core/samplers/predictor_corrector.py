"""Predictor-corrector sampling of the VE SDE that NCSN's schedule discretises (Song, Sohl-Dickstein, Kingma, Kumar,
Ermon, Poole, ICLR 2021, "Score-based generative modeling through stochastic differential equations": Algorithm 2,
PC sampling for the VE SDE, with the Langevin corrector of Algorithm 4, Appendix G).

Official code: yang-song/score_sde_pytorch ``sampling.py``: ``get_pc_sampler``, ``ReverseDiffusionPredictor``
(with ``sde_lib.VESDE.discretize``), ``AncestralSamplingPredictor`` and ``LangevinCorrector``.
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
from ncsn_pl.core.scores import AnyScoreFn, score_at
from ncsn_pl.core.sigmas import langevin_step_lr

__all__ = ["PredictorCorrector", "corrector_snr", "corrector_step_size", "predictor_corrector"]

NAME = "Predictor-corrector sampling"
Predictor = Literal["reverse_diffusion", "ancestral"]
StepNorm = Literal["sample", "batch"]


def corrector_step_size(score: Tensor, noise: Tensor, snr: float, step_norm: StepNorm = "sample") -> Tensor:
    """The Langevin corrector's step ``2 (snr ||z|| / ||s||)^2`` (score_sde ``LangevinCorrector``, VE: alpha = 1).

    The norms are per-sample L2 norms; ``batch`` averages them over the batch as score_sde does (one step for the
    batch, a 0-d tensor), ``sample`` keeps each sample's own (shape ``(B, 1, ...)``, broadcastable to ``x``).
    """
    grad_norm = score.flatten(1).norm(dim=1)
    noise_norm = noise.flatten(1).norm(dim=1)
    if step_norm == "batch":
        return 2 * (snr * noise_norm.mean() / grad_norm.mean()) ** 2
    return (2 * (snr * noise_norm / grad_norm) ** 2).view(-1, *(1,) * (score.ndim - 1))


def corrector_snr(sigmas: Tensor | list[float], n_steps_each: int) -> float:
    """The snr whose corrector step matches annealed Langevin with NCSNv2's Technique 4 for T = ``n_steps_each``:
    ``snr = sqrt(step_lr / (2 sigma_min^2))``.

    With ``||z|| ~ sqrt(D)`` and ``||s|| ~ sqrt(D) / sigma`` the step ``2 (snr ||z|| / ||s||)^2`` is
    ``2 snr^2 sigma^2``, annealed Langevin's ``step_lr sigma^2 / sigma_min^2`` for this snr: score_sde's NCSN and
    NCSNv2 configs so (``configs/ncsn/cifar10.py`` 0.316 for step_lr 2e-5, ``configs/ncsnv2/cifar10.py`` 0.176 for
    6.2e-6, ``celeba.py`` 0.128 for 3.3e-6). Without corrector steps it is T = 1's.
    """
    values = sigmas.tolist() if isinstance(sigmas, Tensor) else [float(s) for s in sigmas]
    return math.sqrt(langevin_step_lr(values, max(1, n_steps_each)) / (2 * values[-1] ** 2))


def _check_settings(snr: float | str, n_steps_each: int, predictor: str, step_norm: str) -> None:
    check_step("PredictorCorrector.snr", snr, "0.16 in score_sde for CIFAR-10")
    check_int("PredictorCorrector.n_steps_each", n_steps_each, 0)
    if predictor not in ("reverse_diffusion", "ancestral"):
        raise ValueError(f"PredictorCorrector.predictor must be 'reverse_diffusion' or 'ancestral', got {predictor!r}.")
    if step_norm not in ("sample", "batch"):
        raise ValueError(f"PredictorCorrector.step_norm must be 'sample' or 'batch', got {step_norm!r}.")


@torch.no_grad()
def predictor_corrector(
    score_fn: AnyScoreFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    snr: float = 0.16,
    n_steps_each: int = 1,
    predictor: Predictor = "reverse_diffusion",
    step_norm: StepNorm = "sample",
    denoise: bool = True,
    noise_fn: NoiseFn | None = None,
    callback: LangevinCallback | None = None,
) -> Tensor:
    """Predictor-corrector sampling on the discrete sigmas (Song et al. 2021, Algorithms 2 and 4, in the code's order).

    For each level ``i = 0 .. L-1`` (largest sigma first), with ``sigma_L = 0`` after the last level:

    * corrector, ``n_steps_each`` times: ``x <- x + e s(x, i) + sqrt(2 e) z`` with the signal-to-noise rule
      ``e = 2 (snr ||z|| / ||s(x, i)||)^2`` (:func:`corrector_step_size`);
    * predictor from ``sigma_i`` to ``sigma_{i+1}``, with ``d = sigma_i^2 - sigma_{i+1}^2``:
      reverse diffusion ``x <- x + d s(x, i) + sqrt(d) z`` (the reverse SDE discretised as SMLD's forward chain,
      ``VESDE.discretize``), or ancestral sampling ``x <- x + d s(x, i) + sqrt(sigma_{i+1}^2 d / sigma_i^2) z``
      (Ho et al. 2020's posterior for SMLD, Song et al. 2021 Appendix F).

    score_sde runs the corrector before the predictor at each level (``get_pc_sampler``), as here; the paper's
    Algorithm 2 lists the predictor first. The last predictor steps to sigma = 0; with ``denoise`` its noise-free
    mean ``x + sigma_L^2 s(x, L-1)`` is returned (score_sde's ``noise_removal``, NCSNv2's denoising step).

    Args:
        score_fn: ``score_fn(x, levels)`` on ``sigmas``, or a :class:`~ncsn_pl.core.scores.SigmaScore`.
        x: the start, shape ``(B, ...)``; score_sde draws it from the prior ``N(0, sigma_max^2 I)``.
        sigmas: the descending schedule, shape ``(L,)``.
        snr: the corrector's signal-to-noise ratio r (0.16 for NCSN++ on CIFAR-10, 0.17 on CelebA).
        n_steps_each: corrector steps per level (1 in score_sde's configs; 0 runs the predictor alone).
        predictor: ``reverse_diffusion`` (score_sde's VE default) or ``ancestral``.
        step_norm: ``batch`` pools the norms of the step rule over the batch (score_sde); ``sample`` uses each
            sample's own, so that a sample does not depend on its batch.
        denoise: return the last predictor's mean, without its noise.
        noise_fn: draws the noise z shaped like x (default ``torch.randn_like``).
        callback: called with a :class:`~ncsn_pl.core.samplers.LangevinStep` after every corrector step (``step``
            ``0 .. n_steps_each - 1``) and predictor step (``step`` ``n_steps_each``).

    Returns:
        The samples, shaped like ``x``.

    Raises:
        FloatingPointError: the samples became NaN or infinite; the message names the level and step.
    """
    _check_settings(snr, n_steps_each, predictor, step_norm)
    values = check_sigmas(sigmas, "PredictorCorrector")
    noise_fn = noise_fn or torch.randn_like
    watch = DivergenceWatch(x, NAME, "Lower snr or check the score network.")
    for level, sigma in enumerate(values):
        next_sigma = values[level + 1] if level + 1 < len(values) else 0.0
        for step in range(n_steps_each):
            # corrector: Langevin step with the signal-to-noise step rule
            score = score_at(score_fn, x, level, sigma)
            noise = noise_fn(x)
            step_size = corrector_step_size(score, noise, snr, step_norm)
            x = x + step_size * score + (2 * step_size).sqrt() * noise
            watch.update(x, level, step, sigma)
            if callback is not None:
                callback(LangevinStep(level, step, sigma, step_size, x, score, noise, "corrector"))
        # predictor: from sigma_i to sigma_{i+1}
        score = score_at(score_fn, x, level, sigma)
        variance = sigma**2 - next_sigma**2
        x = x + variance * score
        # its noise: none after the last level with denoise; the ancestral one vanishes there anyway
        std = math.sqrt(variance) if predictor == "reverse_diffusion" else next_sigma * math.sqrt(variance) / sigma
        noise = None
        if std > 0 and not (denoise and next_sigma == 0):
            noise = noise_fn(x)
            x = x + std * noise
        watch.update(x, level, n_steps_each, sigma)
        if callback is not None:
            callback(LangevinStep(level, n_steps_each, sigma, variance, x, score, noise, "predictor"))
        watch.check()
    watch.check(final=True)
    return x


@dataclass(frozen=True)
class PredictorCorrector(Sampler):
    """Predictor-corrector sampling of the VE SDE (Song et al. 2021, Algorithm 2) as a sampler setting.

    :meth:`sample` runs :func:`predictor_corrector` with these settings on the given sigmas
    (``L (n_steps_each + 1)`` evaluations).

    Defaults: score_sde's CIFAR-10 NCSN++ sampler (``configs/default_cifar10_configs.py``): reverse diffusion +
    one Langevin corrector step, snr 0.16, noise removal; except ``step_norm`` (see there).
    """

    snr: float | Literal["auto"] = 0.16
    """r in the corrector's step ``2 (r ||z|| / ||s||)^2`` (0.16 for CIFAR-10, 0.17 for CelebA; score_sde's
    NCSN/NCSNv2 reproductions use 0.316 / 0.176 / 0.128 with their own ALD corrector); acts like a temperature.
    ``auto``: :func:`corrector_snr` of the schedule sampled, the snr of annealed Langevin's Technique-4 step."""
    n_steps_each: int = 1
    """Corrector steps per level (1 in score_sde's configs; 0 runs the predictor alone)."""
    predictor: Predictor = "reverse_diffusion"
    """``reverse_diffusion`` (score_sde's VE default, ``ReverseDiffusionPredictor``) or ``ancestral``
    (``AncestralSamplingPredictor``)."""
    step_norm: StepNorm = "sample"
    """How the corrector's step rule pools the norms: ``batch`` takes the batch means of the per-sample norms, as
    score_sde, so every sample's step depends on the rest of its batch; ``sample`` (the default here) uses each
    sample's own norms, so a sample is the same in any batch and on any rank (per-sample seeding)."""
    denoise: bool = True
    """Return the last predictor's noise-free mean ``x + sigma_L^2 s(x, L-1)`` (score_sde's ``noise_removal``)."""

    function = staticmethod(predictor_corrector)
    start: ClassVar[Literal["uniform", "gaussian"]] = "gaussian"

    def __post_init__(self) -> None:
        _check_settings(self.snr, self.n_steps_each, self.predictor, self.step_norm)

    def resolve(self, sigmas: Tensor) -> PredictorCorrector:
        """``snr="auto"``: :func:`corrector_snr` of ``sigmas`` for ``n_steps_each``."""
        if self.snr != AUTO:
            return self
        values = check_sigmas(sigmas, "PredictorCorrector")
        return dataclasses.replace(self, snr=corrector_snr(values, self.n_steps_each))

    def nfe(self, num_scales: int) -> int:
        """``L (n_steps_each + 1)``: score_sde's ``sde.N * (n_steps + 1)``."""
        return num_scales * (self.n_steps_each + 1)
