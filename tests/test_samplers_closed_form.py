"""The new samplers against closed forms: the NCSN toy mixture's weights, exact moments on Gaussian data, the ODE.

On Gaussian data N(mu, s^2 I) with the exact score every update is linear, ``x - mu <- A (x - mu) + b z``, so the
mean and variance of each sampler's output follow exactly from a scalar recursion over its updates (the predictor-
corrector's step rule too, once its batch-mean norms are replaced by their expectations). The tests compare the
samples with those moments within five standard errors of the sample size, and the moments with the data's.
"""

import math

import pytest
import torch

from ncsn_pl.core.distributions import GaussianMixture
from ncsn_pl.core.samplers import (
    ConsistentAnnealed,
    PredictorCorrector,
    ProbabilityFlowODE,
    annealed_langevin_dynamics,
)
from ncsn_pl.core.seeding import noise_from
from ncsn_pl.core.sigmas import geometric_sigmas

MIXTURE = GaussianMixture()  # 0.8 N((5, 5), I) + 0.2 N((-5, -5), I), NCSN §3.2.2


def heavy_fraction(x):
    return (x.sum(1) > 0).float().mean().item()


def uniform_start(n, generator, dim=2):  # the paper's U[-8, 8]^d
    return torch.rand(n, dim, generator=generator, dtype=torch.float64) * 16 - 8


def ancestral_step_lr(sigmas):
    """CAS's eta = 1 - gamma^-2 keeps (sigma_{i+1} / sigma_i)^2 of the residual noise: SMLD's ancestral step."""
    return sigmas[-1].item() ** 2 * (1 - (sigmas[1] / sigmas[0]).item() ** 2)


# --- the mode weights of the NCSN toy mixture (n = 4000: the fraction's standard error is 0.0063) ---


@pytest.mark.parametrize(
    ("sampler", "num_scales", "sigma_conditioned"),
    [
        (ConsistentAnnealed(step_lr=ancestral_step_lr(geometric_sigmas(20.0, 1.0, 50)), denoise=False), 50, False),
        # five steps per level on a refined grid: 46 levels with the ratio of a 46-level schedule
        (ConsistentAnnealed(5, ancestral_step_lr(geometric_sigmas(20.0, 1.0, 46)), denoise=False), 10, True),
        (PredictorCorrector(step_norm="batch", denoise=False), 100, False),
    ],
    ids=["consistent", "consistent-refined", "predictor-corrector"],
)
def test_stochastic_samplers_recover_the_mixture_weights(sampler, num_scales, sigma_conditioned):
    sigmas = geometric_sigmas(20.0, 1.0, num_scales)
    g = torch.Generator().manual_seed(0)
    score = MIXTURE.sigma_score_fn() if sigma_conditioned else MIXTURE.score_fn(sigmas)
    x = sampler.sample(score, uniform_start(4000, g).float(), sigmas, noise_fn=noise_from(g))
    assert heavy_fraction(x) == pytest.approx(0.8, abs=0.03)
    assert (x[x.sum(1) > 0] - 5).abs().mean().item() < 1.5  # on the modes


@pytest.mark.parametrize(
    ("ode", "sigma_conditioned"),
    [(ProbabilityFlowODE(), False), (ProbabilityFlowODE("euler"), False), (ProbabilityFlowODE(num_steps=20), True)],
    ids=["heun-levels", "euler-levels", "heun-karras-20"],
)
def test_ode_recovers_the_mixture_weights_from_the_noisy_marginal(ode, sigma_conditioned):
    # the flow maps p_sigma_max to p_0, so it starts from p_sigma_max itself: data + sigma_max z
    sigmas = geometric_sigmas(20.0, 0.01, 50)
    g = torch.Generator().manual_seed(0)
    x0 = MIXTURE.sample(4000, g) + 20.0 * torch.randn(4000, 2, generator=g)
    score = MIXTURE.sigma_score_fn() if sigma_conditioned else MIXTURE.score_fn(sigmas)
    x = ode.sample(score, x0, sigmas)
    assert heavy_fraction(x) == pytest.approx(0.8, abs=0.03)
    heavy = x[x.sum(1) > 0]
    assert heavy.mean(0).tolist() == pytest.approx([5.0, 5.0], abs=0.15)
    assert heavy.var(0).mean().item() == pytest.approx(1.0, abs=0.15)


# --- exact moments on Gaussian data ---

MU, S, DIM, N = 1.5, 0.5, 16, 2000  # data N(MU, S^2 I_16); 2000 samples give 32000 values


def gaussian():
    return GaussianMixture([1.0], [[MU] * DIM], [S])


class Linear:
    """``x - mu = c (x0 - mu) + N(0, w)``, updated by ``x - mu <- A (x - mu) + b z``."""

    def __init__(self, start_var):
        self.c, self.w, self.start_var = 1.0, 0.0, start_var

    def step(self, a, b2=0.0):
        self.c *= a
        self.w = a * a * self.w + b2

    @property
    def var(self):
        return self.c**2 * self.start_var + self.w


def variance(sigma):
    return S**2 + sigma**2


def assert_moments(x, start_mean, state):
    """Mean and variance of ``x`` within five standard errors of the recursion's."""
    mean = MU + state.c * (start_mean - MU)
    assert (x.mean(0) - mean).abs().max().item() < 5 * math.sqrt(state.var / x.shape[0])
    assert (x - mean).pow(2).mean().item() == pytest.approx(state.var, rel=5 * math.sqrt(2 / x.numel()))
    return mean, state.var


def test_annealed_langevin_moments_on_gaussian_data():
    sigmas, lr, steps = geometric_sigmas(20.0, 0.01, 50).double(), 4e-5, 10
    g = torch.Generator().manual_seed(0)
    x = annealed_langevin_dynamics(
        gaussian().score_fn(sigmas), uniform_start(N, g, DIM), sigmas, n_steps_each=steps, step_lr=lr, denoise=True,
        noise_fn=noise_from(g),
    )
    state = Linear(64 / 3)  # U[-8, 8]: mean 0, variance 64/3
    for sigma in sigmas.tolist():
        a = lr * sigma**2 / sigmas[-1].item() ** 2
        for _ in range(steps):
            state.step(1 - a / variance(sigma), 2 * a)
    state.step(1 - sigmas[-1].item() ** 2 / variance(sigmas[-1].item()))
    mean, var = assert_moments(x, 0.0, state)
    assert mean == pytest.approx(MU, abs=1e-3) and var == pytest.approx(S**2, rel=0.06)


def test_consistent_annealed_sampling_moments_on_gaussian_data():
    sigmas = geometric_sigmas(20.0, 0.01, 200).double()
    sampler = ConsistentAnnealed(step_lr=ancestral_step_lr(sigmas))
    g = torch.Generator().manual_seed(0)
    x = sampler.sample(gaussian().score_fn(sigmas), uniform_start(N, g, DIM), sigmas, noise_fn=noise_from(g))
    eta, values, state = sampler.step_lr / sigmas[-1].item() ** 2, sigmas.tolist(), Linear(64 / 3)
    for sigma, following in zip(values[:-1], values[1:], strict=True):
        state.step(1 - eta * sigma**2 / variance(sigma), following**2 - ((1 - eta) * sigma) ** 2)
    state.step(1 - values[-1] ** 2 / variance(values[-1]))  # denoise: the full Tweedie step
    mean, var = assert_moments(x, 0.0, state)
    assert mean == pytest.approx(MU, abs=1e-3) and var == pytest.approx(S**2, rel=0.06)


def test_consistent_noise_is_exact_for_data_at_one_point():
    # CAS's defining property: with data at one point the noise of x is sigma_i at every level, for any eta
    sigmas = geometric_sigmas(20.0, 0.5, 8)
    point = GaussianMixture([1.0], [[2.0] * 4], [1e-6])
    levels_seen = []

    def check(step):
        levels_seen.append(step.level)
        following = sigmas[step.level + 1].item() if step.level + 1 < len(sigmas) else 0.0
        noise_std = (step.x - 2.0).std().item()
        expected = following if following else (1 - 0.7) * sigmas[-1].item()  # no noise after the last level
        assert noise_std == pytest.approx(expected, rel=0.03)

    x0 = 2.0 + sigmas[0].item() * torch.randn(20000, 4, generator=torch.Generator().manual_seed(0))
    ConsistentAnnealed(step_lr=0.7 * sigmas[-1].item() ** 2, denoise=False).sample(
        point.score_fn(sigmas), x0, sigmas, noise_fn=noise_from(torch.Generator().manual_seed(1)), callback=check
    )
    assert levels_seen == list(range(8))


@pytest.mark.parametrize("predictor", ["reverse_diffusion", "ancestral"])
@pytest.mark.parametrize("n_steps_each", [0, 1])
def test_predictor_corrector_moments_on_gaussian_data(predictor, n_steps_each):
    sigmas, snr = geometric_sigmas(20.0, 0.01, 100).double(), 0.16
    sampler = PredictorCorrector(snr, n_steps_each, predictor, step_norm="batch")
    g = torch.Generator().manual_seed(0)
    start_var = variance(20.0)  # p_sigma_max: the step rule's expectation below needs a Gaussian start
    x0 = MU + math.sqrt(start_var) * torch.randn(N, DIM, generator=g, dtype=torch.float64)
    x = sampler.sample(gaussian().score_fn(sigmas), x0, sigmas, noise_fn=noise_from(g))
    values, state = sigmas.tolist(), Linear(start_var)
    for i, sigma in enumerate(values):
        following = values[i + 1] if i + 1 < len(values) else 0.0
        for _ in range(n_steps_each):
            # E||z|| / E||x - mu|| = 1 / sqrt(var) and ||s|| = ||x - mu|| / V: e = 2 snr^2 V^2 / var
            e = 2 * snr**2 * variance(sigma) ** 2 / state.var
            state.step(1 - e / variance(sigma), 2 * e)
        d = sigma**2 - following**2
        noise = d if predictor == "reverse_diffusion" else following**2 * d / sigma**2
        state.step(1 - d / variance(sigma), noise if following else 0.0)  # denoise: no noise at the end
    mean, var = assert_moments(x, MU, state)
    assert var == pytest.approx(S**2, rel=0.1)


def test_predictor_corrector_step_norms_agree_in_image_dimension():
    # the per-sample step rule (step_norm="sample") matches score_sde's batch-mean rule when norms concentrate
    dim, n = 768, 64
    sigmas = geometric_sigmas(20.0, 0.01, 60)
    data = GaussianMixture([1.0], [[0.0] * dim], [S])
    x0 = math.sqrt(variance(20.0)) * torch.randn(n, dim, generator=torch.Generator().manual_seed(0))
    results = [
        PredictorCorrector(step_norm=norm).sample(
            data.sigma_score_fn(), x0, sigmas, noise_fn=noise_from(torch.Generator().manual_seed(1))
        )
        for norm in ("batch", "sample")
    ]
    batch_var, sample_var = (r.pow(2).mean().item() for r in results)
    assert sample_var == pytest.approx(batch_var, rel=0.02)
    assert batch_var == pytest.approx(S**2, rel=0.05)


@pytest.mark.parametrize("solver", ["euler", "heun"])
@pytest.mark.parametrize("level_stride", [1, 3])
def test_ode_is_the_exact_linear_map_on_gaussian_data(solver, level_stride):
    sigmas = geometric_sigmas(20.0, 0.01, 40).double()
    ode = ProbabilityFlowODE(solver, level_stride=level_stride)
    g = torch.Generator().manual_seed(0)
    x0 = MU + math.sqrt(variance(20.0)) * torch.randn(N, DIM, generator=g, dtype=torch.float64)
    x = ode.sample(gaussian().score_fn(sigmas), x0, sigmas)
    # dx/dsigma = sigma (x - mu) / V(sigma): Euler and Heun multiply x - mu by a number per step
    levels = list(range(0, 40, level_stride)) + ([39] if 39 % level_stride else [])
    times = [sigmas[i].item() for i in levels] + [0.0]
    factor = 1.0
    for t, t_next in zip(times[:-1], times[1:], strict=True):
        euler = 1 + (t_next - t) * t / variance(t)
        if solver == "heun" and t_next > 0:
            euler = 1 + (t_next - t) * 0.5 * (t / variance(t) + t_next / variance(t_next) * euler)
        factor *= euler
    torch.testing.assert_close(x - MU, factor * (x0 - MU))
    # the exact flow scales by sqrt(V(sigma_min) / V(sigma_max)), then Tweedie's step by S^2 / V(sigma_min)
    exact = math.sqrt(variance(0.01) / variance(20.0)) * S**2 / variance(0.01)
    # first order: 4.8% (every level) and 14% (every third); second order: 0.5% and 5%
    tolerance = {("euler", 1): 0.06, ("euler", 3): 0.15, ("heun", 1): 0.01, ("heun", 3): 0.06}[solver, level_stride]
    assert factor == pytest.approx(exact, rel=tolerance)
    state = Linear(variance(20.0))
    state.step(factor)
    assert_moments(x, MU, state)


def test_ode_is_deterministic_and_maps_prior_noise_to_the_data():
    sigmas = geometric_sigmas(20.0, 0.01, 30)
    data = GaussianMixture([1.0], [[0.0] * DIM], [S])
    x0 = 20.0 * torch.randn(N, DIM, generator=torch.Generator().manual_seed(0))  # N(0, sigma_max^2 I)
    for ode, score in [(ProbabilityFlowODE(), data.score_fn(sigmas)), (ProbabilityFlowODE(num_steps=32), None)]:
        score = score or data.sigma_score_fn()
        first, second = ode.sample(score, x0.clone(), sigmas), ode.sample(score, x0.clone(), sigmas)
        assert torch.equal(first, second)
        # N(0, 400) is p_20 up to S^2 / 400: the output is N(0, S^2) within the sampling error
        assert first.mean().abs().item() < 5 * S / math.sqrt(first.numel())
        assert first.var().item() == pytest.approx(S**2, rel=0.05)
