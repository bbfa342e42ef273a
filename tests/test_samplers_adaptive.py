"""The adaptive reverse VE-SDE solver (AdaptiveVESDE) and EDM's stochastic sampler (EDMStochastic) against closed
forms: a mixture's weights, Gaussian data's moments, the tolerance and the step count, per-sample NFE and seeding.

The adaptive solver is tested in the dimension of images (256 and 1,024 values per sample): its accept/reject
decision depends on the noise draw through a norm that concentrates only there (see ``adaptive_ve_sde``).
"""

import math

import pytest
import torch

from ncsn_pl.core.distributions import GaussianMixture
from ncsn_pl.core.samplers import (
    AdaptiveVESDE,
    EDMStochastic,
    NFECount,
    ProbabilityFlowODE,
    SigmaScore,
    seeded_sample,
)
from ncsn_pl.core.samplers.edm import churn_gamma
from ncsn_pl.core.seeding import noise_from, step_seed
from ncsn_pl.core.sigmas import geometric_sigmas, karras_sigmas

SIGMAS = geometric_sigmas(20.0, 0.01, 50).double()
MU, S = 1.5, 0.5


def gaussian(dim):
    return GaussianMixture([1.0], [[MU] * dim], [S])


def prior_marginal(n, dim, generator):
    """Gaussian data's noisy marginal at sigma_max = 20: N(MU, S^2 + 400)."""
    return MU + math.sqrt(S**2 + 400.0) * torch.randn(n, dim, generator=generator, dtype=torch.float64)


def heavy_mixture(dim):
    """0.8 N(+c, I) + 0.2 N(-c, I) in ``dim`` dimensions, modes 16 apart (the NCSN paper's weights)."""
    c = 8 / math.sqrt(dim)
    return GaussianMixture([0.8, 0.2], [[c] * dim, [-c] * dim], [1.0, 1.0])


class RowCounting:
    """A sigma-conditioned score that counts the rows (samples) it evaluates."""

    def __init__(self, fn):
        self.fn, self.rows = fn, 0

    def __call__(self, x, sigma):
        self.rows += x.shape[0]
        return self.fn(x, sigma)


# --- AdaptiveVESDE ---


def test_adaptive_solver_recovers_the_mixture_weights():
    mixture, g = heavy_mixture(256), torch.Generator().manual_seed(0)
    x0 = mixture.sample(2000, g).double() + 20.0 * torch.randn(2000, 256, generator=g, dtype=torch.float64)
    x = AdaptiveVESDE().sample(mixture.sigma_score_fn(), x0, SIGMAS, noise_fn=noise_from(g))
    heavy = x.mean(1) > 0
    assert heavy.double().mean().item() == pytest.approx(0.8, abs=0.03)  # standard error 0.009
    assert (x[heavy] - mixture.means[0]).pow(2).mean().item() == pytest.approx(1.0, abs=0.05)  # on the modes


def test_adaptive_solver_gives_gaussian_moments_and_tighter_tolerances_cost_more_and_err_less():
    exact = S**4 / (S**2 + 0.01**2)  # p_sigma_min, then Tweedie's step
    runs = {}
    for eps_rel in (0.005, 0.02, 0.1):
        g = torch.Generator().manual_seed(1)
        counted = NFECount()
        counted.begin(300, "cpu")
        x = AdaptiveVESDE(eps_rel=eps_rel).sample(
            gaussian(1024).sigma_score_fn(), prior_marginal(300, 1024, g), SIGMAS, noise_fn=noise_from(g),
            callback=counted,
        )  # fmt: skip
        counted.end()
        runs[eps_rel] = (x, counted.per_sample)
    x, nfe = runs[0.005]
    assert x.mean().item() == pytest.approx(MU, abs=5 * S / math.sqrt(x.numel()))
    assert x.var().item() == pytest.approx(exact, rel=0.01)  # sampling error 0.26 %
    errors = [abs(runs[e][0].var().item() / exact - 1) for e in (0.005, 0.02, 0.1)]
    assert errors[0] < 0.01 < 0.02 < errors[2]
    means = [runs[e][1].double().mean().item() for e in (0.005, 0.02, 0.1)]
    assert means[0] > means[1] > means[2] > 20
    assert nfe.max() > nfe.min() and (nfe % 2 == 1).all()  # 2 per step, per sample, plus the denoising step


def test_adaptive_nfe_is_counted_per_sample_and_every_sample_is_the_same_in_any_batch():
    score = RowCounting(gaussian(256).sigma_score_fn())
    seeds = [step_seed(7, k) for k in range(6)]
    counted = NFECount()
    whole = seeded_sample(AdaptiveVESDE(eps_rel=0.05), SigmaScore(score), SIGMAS, (256,), seeds, nfe_count=counted,
                          init_range=(-8.0, 8.0))  # fmt: skip
    assert counted.per_sample.sum().item() == score.rows  # an arrived sample evaluates nothing more
    split = NFECount()
    halves = [seeded_sample(AdaptiveVESDE(eps_rel=0.05), SigmaScore(score), SIGMAS, (256,), part, nfe_count=split,
                            init_range=(-8.0, 8.0)) for part in (seeds[:1], seeds[1:4], seeds[4:])]  # fmt: skip
    assert torch.equal(whole, torch.cat(halves))
    assert torch.equal(counted.per_sample, split.per_sample)
    assert AdaptiveVESDE().nfe(50) is None


def test_adaptive_solver_without_extrapolation_goes_on_from_euler_maruyama():
    g = torch.Generator().manual_seed(2)
    x0 = prior_marginal(50, 256, g)
    runs = [AdaptiveVESDE(eps_rel=0.05, extrapolation=e).sample(gaussian(256).sigma_score_fn(), x0, SIGMAS,
                                                                 noise_fn=noise_from(torch.Generator().manual_seed(3)))
            for e in (True, False)]  # fmt: skip
    assert not torch.equal(*runs)
    assert runs[1].var().item() == pytest.approx(S**2, rel=0.1)


def test_adaptive_reports_say_which_samples_stepped():
    seen = []
    x = AdaptiveVESDE(eps_rel=0.1).sample(gaussian(64).sigma_score_fn(), prior_marginal(3, 64, torch.Generator()),
                                          SIGMAS, noise_fn=noise_from(None), callback=seen.append)  # fmt: skip
    assert [r.kind for r in seen[-2:]] == ["adaptive", "denoise"] and torch.equal(seen[-1].x, x)
    assert seen[0].sigma == pytest.approx(20.0) and seen[0].nfe.tolist() == [2, 2, 2]
    assert all(r.nfe.max() == 2 for r in seen[:-1]) and seen[-1].nfe == 1
    assert [r.level for r in seen[:-1]] == list(range(len(seen) - 1))


# --- EDMStochastic ---


def test_edm_without_churn_is_the_probability_flow_ode_on_its_grid():
    x0 = prior_marginal(200, 16, torch.Generator().manual_seed(0))
    score = gaussian(16).sigma_score_fn()
    edm = EDMStochastic(num_steps=12, s_churn=0.0).sample(score, x0, SIGMAS)
    assert torch.equal(edm, ProbabilityFlowODE(num_steps=12).sample(score, x0, SIGMAS))


@pytest.mark.parametrize(("s_tmin", "s_tmax"), [(0.0, math.inf), (0.05, 2.0)], ids=["everywhere", "window"])
def test_edm_moments_on_gaussian_data_follow_the_linear_recursion(s_tmin, s_tmax):
    # every step is linear in x - mu: the churn adds (t^2 - t^2) S_noise^2 to the variance, Euler and Heun scale it
    sampler = EDMStochastic(num_steps=30, s_churn=20.0, s_tmin=s_tmin, s_tmax=s_tmax, s_noise=1.007)
    g = torch.Generator().manual_seed(0)
    x0 = prior_marginal(4000, 16, g)
    x = sampler.sample(gaussian(16).sigma_score_fn(), x0, SIGMAS, noise_fn=noise_from(g))
    times = [*karras_sigmas(20.0, 0.01, 30).double().tolist(), 0.0]
    times[0], times[-2] = 20.0, SIGMAS[-1].item()
    gamma, var = churn_gamma(30, 20.0), S**2 + 400.0
    churned = 0
    for t, t_next in zip(times[:-1], times[1:], strict=True):
        t_hat = t * (1 + gamma) if s_tmin <= t <= s_tmax else t
        churned += t_hat > t
        var += (t_hat**2 - t**2) * 1.007**2

        def slope(sigma):
            return sigma / (S**2 + sigma**2)

        factor = 1 + (t_next - t_hat) * slope(t_hat)
        if t_next > 0:
            factor = 1 + (t_next - t_hat) * 0.5 * (slope(t_hat) + slope(t_next) * factor)
        var *= factor**2
    assert churned == (30 if s_tmin == 0 else sum(0.05 <= t <= 2.0 for t in times[:-1]))
    assert x.mean().item() == pytest.approx(MU, abs=5 * math.sqrt(var / x.numel()))
    assert (x - MU).pow(2).mean().item() == pytest.approx(var, rel=5 * math.sqrt(2 / x.numel()))
    assert var == pytest.approx(S**2, rel=0.1)  # 30 steps: close to the data, S_noise > 1 adds a little


def test_edm_recovers_the_mixture_weights():
    mixture, g = heavy_mixture(2), torch.Generator().manual_seed(0)
    x0 = mixture.sample(4000, g).double() + 20.0 * torch.randn(4000, 2, generator=g, dtype=torch.float64)
    x = EDMStochastic(num_steps=40).sample(mixture.sigma_score_fn(), x0, SIGMAS, noise_fn=noise_from(g))
    assert (x.mean(1) > 0).double().mean().item() == pytest.approx(0.8, abs=0.03)


def test_edm_nfe_and_seeding():
    sampler = EDMStochastic(num_steps=6, s_churn=10.0)
    score = RowCounting(gaussian(4).sigma_score_fn())
    seeds = [step_seed(1, k) for k in range(5)]
    counted = NFECount()
    whole = seeded_sample(sampler, SigmaScore(score), SIGMAS, (4,), seeds, nfe_count=counted)
    assert score.rows == 5 * sampler.nfe(50) == 5 * 11 and counted.per_sample.tolist() == [11] * 5
    halves = torch.cat([seeded_sample(sampler, SigmaScore(score), SIGMAS, (4,), p) for p in (seeds[:2], seeds[2:])])
    assert torch.equal(whole, halves)
    assert EDMStochastic(num_steps=6, denoise=False).nfe(50) == 10


# --- what both refuse ---


@pytest.mark.parametrize("sampler", [AdaptiveVESDE(), EDMStochastic(num_steps=4)], ids=lambda s: type(s).__name__)
def test_a_level_indexed_network_is_refused_before_any_evaluation(sampler):
    calls = []
    with pytest.raises(ValueError, match=f"{type(sampler).__name__} evaluates the score at .* pass a SigmaScore"):
        sampler.sample(lambda x, levels: calls.append(1), torch.zeros(2, 4), SIGMAS)
    with pytest.raises(ValueError, match="at least 2 sigmas"):
        sampler.sample(gaussian(4).sigma_score_fn(), torch.zeros(2, 4), SIGMAS[:1])
    assert calls == []


@pytest.mark.parametrize("sampler", [AdaptiveVESDE(), EDMStochastic(num_steps=4)], ids=lambda s: type(s).__name__)
def test_divergence_names_the_sampler(sampler):
    def nan_below_one(x, sigma):
        return torch.where((sigma < 1).view(-1, 1), math.nan, -x / (1 + sigma.view(-1, 1) ** 2))

    with pytest.raises(FloatingPointError, match=f"{type(sampler).__name__} diverged"):
        sampler.sample(SigmaScore(nan_below_one), torch.zeros(2, 64, dtype=torch.float64), SIGMAS,
                       noise_fn=noise_from(None))  # fmt: skip


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: AdaptiveVESDE(eps_abs=0.0), "eps_abs"),
        (lambda: AdaptiveVESDE(eps_rel=-0.1), "eps_rel"),
        (lambda: AdaptiveVESDE(h_init=2.0), "h_init"),
        (lambda: AdaptiveVESDE(theta=1.5), "theta"),
        (lambda: AdaptiveVESDE(r=0.0), "r"),
        (lambda: EDMStochastic(num_steps=1), "num_steps"),
        (lambda: EDMStochastic(s_churn=-1.0), "s_churn"),
        (lambda: EDMStochastic(s_tmin=2.0, s_tmax=1.0), "s_tmin <= s_tmax"),
        (lambda: EDMStochastic(s_noise=0.0), "s_noise"),
        (lambda: EDMStochastic(rho=0.0), "rho"),
    ],
)
def test_invalid_settings_are_rejected_on_construction(make, field):
    with pytest.raises(ValueError, match=field):
        make()
