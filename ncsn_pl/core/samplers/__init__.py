"""Samplers of noise conditional score networks (pure PyTorch), one calling convention for all.

Every sampler is a pure function ``sampler(score_fn, x, sigmas, *, ..., noise_fn, callback)`` (k-diffusion style)
and a frozen settings dataclass with ``sample(score_fn, x, sigmas, *, noise_fn=None, callback=None)`` and
``nfe(num_scales)`` (None where it differs per sample: then :class:`NFECount` counts it from the samplers' reports),
so a config chooses one by ``class_path``:

* :class:`AnnealedLangevin`: NCSN's annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1);
* :class:`ConsistentAnnealed`: consistent annealed sampling (Jolicoeur-Martineau et al. 2021);
* :class:`PredictorCorrector`: reverse diffusion + Langevin corrector for the VE SDE (Song et al. 2021);
* :class:`ProbabilityFlowODE`: the probability-flow ODE with Euler or Heun (Song et al. 2021; Karras et al. 2022);
* :class:`AdaptiveVESDE`: the reverse VE SDE with adaptive step sizes (Jolicoeur-Martineau et al. 2021, "Gotta Go
  Fast"; NFE per sample);
* :class:`EDMStochastic`: EDM's stochastic sampler, Heun's method with churn (Karras et al. 2022, Algorithm 2).

A step size given as ``"auto"`` (``AnnealedLangevin.step_lr``, ``ConsistentAnnealed.step_lr``,
``PredictorCorrector.snr``) is computed from the schedule sampled (:meth:`Sampler.resolve`), so one setting fits every
schedule and image size.

``score_fn`` is level-indexed, ``score_fn(x, levels)``, or a :class:`~ncsn_pl.core.scores.SigmaScore`. All
randomness goes through ``noise_fn`` (default ``torch.randn_like``): :func:`ncsn_pl.core.seeding.noise_from` pins it
to a generator, :class:`ncsn_pl.core.seeding.PerSampleNoise` seeds every sample on its own (:func:`seeded_sample`).
"""

from ncsn_pl.core.samplers.adaptive import AdaptiveVESDE, adaptive_ve_sde
from ncsn_pl.core.samplers.base import (
    LangevinCallback,
    LangevinStep,
    NFECount,
    NoiseFn,
    RangeWatch,
    Sampler,
    check_sampler,
    check_sigmas,
    describe_sampler,
    seeded_sample,
)
from ncsn_pl.core.samplers.consistent import (
    ConsistentAnnealed,
    consistent_ancestral_step_lr,
    consistent_annealed_sampling,
    consistent_grid,
    consistent_step_lr_range,
)
from ncsn_pl.core.samplers.edm import EDMStochastic, edm_stochastic
from ncsn_pl.core.samplers.langevin import (
    AnnealedLangevin,
    annealed_langevin_dynamics,
    denoise_step,
    langevin_dynamics,
    seeded_annealed_langevin,
    step_sizes,
)
from ncsn_pl.core.samplers.ode import ProbabilityFlowODE, ode_grid, probability_flow_ode
from ncsn_pl.core.samplers.predictor_corrector import (
    PredictorCorrector,
    corrector_snr,
    corrector_step_size,
    predictor_corrector,
)
from ncsn_pl.core.scores import SigmaScore, sigma_scaled_score

__all__ = [
    "AdaptiveVESDE",
    "AnnealedLangevin",
    "ConsistentAnnealed",
    "EDMStochastic",
    "LangevinCallback",
    "LangevinStep",
    "NFECount",
    "NoiseFn",
    "RangeWatch",
    "PredictorCorrector",
    "ProbabilityFlowODE",
    "Sampler",
    "SigmaScore",
    "adaptive_ve_sde",
    "annealed_langevin_dynamics",
    "check_sampler",
    "check_sigmas",
    "consistent_ancestral_step_lr",
    "consistent_annealed_sampling",
    "consistent_grid",
    "consistent_step_lr_range",
    "describe_sampler",
    "edm_stochastic",
    "corrector_snr",
    "corrector_step_size",
    "denoise_step",
    "langevin_dynamics",
    "ode_grid",
    "predictor_corrector",
    "probability_flow_ode",
    "seeded_annealed_langevin",
    "seeded_sample",
    "sigma_scaled_score",
    "step_sizes",
]
