"""The samplers' common calling convention: settings classes, NFE, per-sample seeding, reports and errors."""

import math

import numpy as np
import pytest
import torch

from ncsn_pl.core.distributions import GaussianMixture
from ncsn_pl.core.samplers import (
    AnnealedLangevin,
    ConsistentAnnealed,
    NFECount,
    PredictorCorrector,
    ProbabilityFlowODE,
    Sampler,
    SigmaScore,
    annealed_langevin_dynamics,
    consistent_ancestral_step_lr,
    consistent_grid,
    consistent_step_lr_range,
    ode_grid,
    seeded_annealed_langevin,
    seeded_sample,
    sigma_scaled_score,
)
from ncsn_pl.core.seeding import noise_from, step_seed
from ncsn_pl.core.sigmas import geometric_sigmas, karras_sigmas, step_lr_from_variance_rule

MIXTURE = GaussianMixture()
SIGMAS = geometric_sigmas(20.0, 1.0, 6)
CAS_LR = 0.5  # eta = 0.5: inside consistent_step_lr_range for SIGMAS with 1 or 3 steps per level

SAMPLERS = {
    "annealed": (AnnealedLangevin(5, 0.1), False),
    "annealed-denoise": (AnnealedLangevin(2, 0.1, denoise=True), True),
    "consistent": (ConsistentAnnealed(step_lr=CAS_LR), False),
    "consistent-refined": (ConsistentAnnealed(3, CAS_LR, denoise=False), True),
    "predictor-corrector": (PredictorCorrector(), False),
    "ancestral-2-correctors": (PredictorCorrector(0.1, 2, "ancestral", denoise=False), True),
    "ode-heun": (ProbabilityFlowODE(), False),
    "ode-euler-stride": (ProbabilityFlowODE("euler", level_stride=2, denoise=False), False),
    "ode-karras": (ProbabilityFlowODE(num_steps=7), True),
}


def score_for(sigma_conditioned, sigmas=SIGMAS):
    return MIXTURE.sigma_score_fn() if sigma_conditioned else MIXTURE.score_fn(sigmas)


class Counting:
    """Counts the calls of a score function (level-indexed or sigma-conditioned)."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, x, condition):
        self.calls += 1
        return self.fn(x, condition)


@pytest.mark.parametrize("name", SAMPLERS)
def test_nfe_counts_the_score_evaluations(name):
    sampler, sigma_conditioned = SAMPLERS[name]
    for num_scales in (6, 7):  # level_stride 2 keeps 0, 2, 4 and the last level 5; or 0, 2, 4, 6
        sigmas = geometric_sigmas(20.0, 1.0, num_scales)
        counting = Counting(score_for(sigma_conditioned, sigmas))
        score = SigmaScore(counting) if sigma_conditioned else counting
        sampler.sample(score, torch.zeros(3, 2), sigmas, noise_fn=noise_from(torch.Generator().manual_seed(0)))
        assert counting.calls == sampler.nfe(num_scales), (name, num_scales)
        # the samplers' reports say the same, per sample
        counted = NFECount()
        seeded_sample(sampler, score, sigmas, (2,), [1, 2, 3], nfe_count=counted, init_range=(-8.0, 8.0))
        seeded_sample(sampler, score, sigmas, (2,), [4], nfe_count=counted, init_range=(-8.0, 8.0))
        assert counted.per_sample.tolist() == [sampler.nfe(num_scales)] * 4, (name, num_scales)


def test_nfe_of_the_papers_settings():
    assert AnnealedLangevin().nfe(10) == 1000  # NCSN
    assert AnnealedLangevin(5, 6.2e-6, denoise=True).nfe(232) == 1161  # NCSNv2 CIFAR-10
    assert PredictorCorrector().nfe(1000) == 2000  # score_sde NCSN++
    assert ProbabilityFlowODE(num_steps=18).nfe(232) == 35  # EDM: 2N - 1
    assert ConsistentAnnealed(5).nfe(232) == 1156


@pytest.mark.parametrize("name", SAMPLERS)
def test_a_batch_split_in_two_gives_the_same_samples_bit_for_bit(name):
    sampler, sigma_conditioned = SAMPLERS[name]
    score = score_for(sigma_conditioned)
    seeds = [step_seed(3, k) for k in range(6)]
    whole = seeded_sample(sampler, score, SIGMAS, (2,), seeds)
    halves = torch.cat([seeded_sample(sampler, score, SIGMAS, (2,), part) for part in (seeds[:2], seeds[2:])])
    assert torch.equal(whole, halves)
    assert torch.isfinite(whole).all() and whole.std() > 0.5  # not collapsed


def test_score_sdes_batch_mean_step_rule_makes_a_sample_depend_on_its_batch():
    sampler = PredictorCorrector(step_norm="batch")
    seeds = [step_seed(3, k) for k in range(6)]
    whole = seeded_sample(sampler, MIXTURE.score_fn(SIGMAS), SIGMAS, (2,), seeds)
    first = seeded_sample(sampler, MIXTURE.score_fn(SIGMAS), SIGMAS, (2,), seeds[:2])
    assert not torch.equal(whole[:2], first)


def test_seeded_sample_starts_as_the_sampler_says():
    seeds = [1, 2, 3]
    uniform = seeded_sample(AnnealedLangevin(1, 1e-12), lambda x, levels: torch.zeros_like(x), SIGMAS, (4,), seeds)
    assert 0 <= uniform.min() and uniform.max() < 1
    prior = seeded_sample(ProbabilityFlowODE(denoise=False), SigmaScore(lambda x, s: 0 * x), SIGMAS, (4,), seeds)
    assert prior.abs().max() > 5  # N(0, 20^2), untouched by a zero score
    assert seeded_sample(PredictorCorrector(), MIXTURE.score_fn(SIGMAS), SIGMAS, (4,), []).shape == (0, 4)


def test_annealed_langevin_class_runs_the_function_unchanged():
    sampler = AnnealedLangevin(4, 0.05, denoise=True)
    kwargs = dict(n_steps_each=4, step_lr=0.05, denoise=True)
    x0 = torch.rand(5, 2, generator=torch.Generator().manual_seed(0)) * 16 - 8
    by_class = sampler.sample(
        MIXTURE.score_fn(SIGMAS), x0, SIGMAS, noise_fn=noise_from(torch.Generator().manual_seed(1))
    )
    by_function = annealed_langevin_dynamics(
        MIXTURE.score_fn(SIGMAS), x0, SIGMAS, noise_fn=noise_from(torch.Generator().manual_seed(1)), **kwargs
    )
    assert torch.equal(by_class, by_function)
    seeds = [4, 5, 6]
    assert torch.equal(
        seeded_sample(sampler, MIXTURE.score_fn(SIGMAS), SIGMAS, (2,), seeds),
        seeded_annealed_langevin(MIXTURE.score_fn(SIGMAS), SIGMAS, (2,), seeds, **kwargs),
    )
    # a sigma-conditioned score is evaluated at sigmas[levels]
    by_sigma = sampler.sample(
        MIXTURE.sigma_score_fn(), x0, SIGMAS, noise_fn=noise_from(torch.Generator().manual_seed(1))
    )
    torch.testing.assert_close(by_sigma, by_class)


def test_consistent_sampling_at_the_ancestral_eta_is_smld_ancestral_sampling():
    # eta = 1 - (sigma_{i+1} / sigma_i)^2 on a geometric schedule: the same update as the ancestral predictor
    sigmas = geometric_sigmas(20.0, 0.5, 12).double()
    step_lr = sigmas[-1].item() ** 2 * (1 - (sigmas[1] / sigmas[0]).item() ** 2)
    x0 = 20.0 * torch.randn(50, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mixture = GaussianMixture([0.8, 0.2], [[5.0, 5.0, 0.0], [-5.0, -5.0, 1.0]], [1.0, 0.5])
    runs = [
        sampler.sample(mixture.score_fn(sigmas), x0, sigmas, noise_fn=noise_from(torch.Generator().manual_seed(1)))
        for sampler in (ConsistentAnnealed(step_lr=step_lr), PredictorCorrector(n_steps_each=0, predictor="ancestral"))
    ]
    torch.testing.assert_close(runs[0], runs[1])


def test_grids():
    # CAS: the authors' geomspace on a geometric schedule
    grid = [s for _, _, s in consistent_grid(SIGMAS.double().tolist(), 4)]
    np.testing.assert_allclose(grid, np.geomspace(20.0, 1.0, 5 * 4 + 1), rtol=1e-6)
    assert consistent_grid([2.0, 1.0], 2)[1][:2] == (0, 1) and consistent_grid([2.0, 1.0], 2)[-1] == (1, 0, 1.0)
    low, high = consistent_step_lr_range([2.0, 1.0])
    assert (low, high) == pytest.approx((0.5, 1.5))  # 1 -+ 1/gamma with gamma = 2
    # the ancestral step: eta = 1 - gamma^-2 on the refined grid (gamma = 2^(1/2) with 2 steps per level)
    assert consistent_ancestral_step_lr([2.0, 1.0]) == pytest.approx(0.75)
    assert consistent_ancestral_step_lr([4.0, 2.0, 1.0], 2) == pytest.approx(0.5)
    # ODE: every k-th trained level and the last one; a grid of its own with the schedule's ends
    assert ode_grid([8.0, 4.0, 2.0, 1.0, 0.5], level_stride=3) == ([8.0, 1.0, 0.5], [0, 3, 4])
    own, levels = ode_grid([80.0, 0.002], num_steps=18)
    assert levels == [None] * 18 and own[0] == 80.0 and own[-1] == 0.002
    np.testing.assert_allclose(own, karras_sigmas(80.0, 0.002, 18).double().numpy(), rtol=1e-6)
    # EDM's grid: rho = 1 is linear in sigma
    torch.testing.assert_close(karras_sigmas(3.0, 1.0, 5, rho=1.0), torch.tensor([3.0, 2.5, 2.0, 1.5, 1.0]))


def test_sigma_scaled_score_divides_the_unscaled_output_by_sigma():
    score = sigma_scaled_score(lambda x: -2 * x)
    x, sigma = torch.ones(3, 2, 2), torch.tensor([1.0, 2.0, 4.0])
    torch.testing.assert_close(score(x, sigma)[:, 0, 0], torch.tensor([-2.0, -1.0, -0.5]))
    assert isinstance(score, SigmaScore)


def test_reports_say_where_each_update_is():
    def reports(sampler, sigma_conditioned=False):
        seen = []
        x = sampler.sample(score_for(sigma_conditioned, SIGMAS[:3]), torch.zeros(4, 2), SIGMAS[:3],
                           noise_fn=noise_from(torch.Generator().manual_seed(0)), callback=seen.append)
        assert torch.equal(seen[-1].x, x) or not sampler.__dict__.get("denoise", False)
        return seen

    pc = reports(PredictorCorrector(n_steps_each=2))
    kinds = [(r.level, r.step, r.kind) for r in pc]
    assert kinds[:4] == [(0, 0, "corrector"), (0, 1, "corrector"), (0, 2, "predictor"), (1, 0, "corrector")]
    assert len(pc) == 9 and pc[0].noise_norm > 0 and pc[0].snr > 0
    cas = reports(ConsistentAnnealed(3, 0.5 * SIGMAS[2].item() ** 2), sigma_conditioned=True)  # eta = 0.5
    assert [(r.level, r.step) for r in cas] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (2, 0)]
    assert cas[-1].noise_norm == 0 and cas[-1].step_size == pytest.approx(SIGMAS[2].item() ** 2)  # denoise
    ode = reports(ProbabilityFlowODE())
    assert [(r.level, r.kind) for r in ode] == [(0, "heun"), (1, "heun"), (2, "euler")]
    assert all(r.noise_norm == 0 and math.isnan(r.snr) for r in ode)


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: AnnealedLangevin(n_steps_each=0), "n_steps_each"),
        (lambda: AnnealedLangevin(step_lr=0.0), "step_lr"),
        (lambda: ConsistentAnnealed(n_steps_each=True), "n_steps_each"),
        (lambda: ConsistentAnnealed(step_lr=-1.0), "step_lr"),
        (lambda: PredictorCorrector(snr=0.0), "snr"),
        (lambda: PredictorCorrector(n_steps_each=-1), "n_steps_each"),
        (lambda: PredictorCorrector(predictor="euler"), "predictor"),
        (lambda: PredictorCorrector(step_norm="mean"), "step_norm"),
        (lambda: ProbabilityFlowODE(solver="rk45"), "solver"),
        (lambda: ProbabilityFlowODE(num_steps=1), "num_steps"),
        (lambda: ProbabilityFlowODE(level_stride=0), "level_stride"),
        (lambda: ProbabilityFlowODE(num_steps=10, level_stride=2), "set one of them"),
        (lambda: ProbabilityFlowODE(rho=0.0), "rho"),
        (lambda: ProbabilityFlowODE(spacing="linear"), "spacing"),
    ],
)
def test_invalid_settings_are_rejected_on_construction(make, field):
    with pytest.raises(ValueError, match=field):
        make()


def test_inputs_a_sampler_cannot_run_with_are_rejected_before_sampling():
    calls = Counting(MIXTURE.score_fn(SIGMAS))
    x = torch.zeros(2, 2)
    one_level = torch.tensor([1.0])
    for sampler in (ConsistentAnnealed(), ProbabilityFlowODE()):
        with pytest.raises(ValueError, match="at least 2 sigmas.*AnnealedLangevin or PredictorCorrector"):
            sampler.sample(calls, x, one_level)
    for sampler in (AnnealedLangevin(2, 0.1), PredictorCorrector()):  # these run on one level
        assert torch.isfinite(sampler.sample(MIXTURE.score_fn(one_level), x, one_level)).all()
    with pytest.raises(ValueError, match="n_steps_each=1, or pass a SigmaScore"):
        ConsistentAnnealed(2, CAS_LR).sample(calls, x, SIGMAS)
    with pytest.raises(ValueError, match="num_steps=None .*or pass a SigmaScore"):
        ProbabilityFlowODE(num_steps=10).sample(calls, x, SIGMAS)
    with pytest.raises(ValueError, match=r"choose step_lr in \(0\.45\d*, 1\.5\d*\)"):
        ConsistentAnnealed(step_lr=1.8e-5).sample(calls, x, SIGMAS)
    for sampler, _ in SAMPLERS.values():
        with pytest.raises(ValueError, match="descend"):
            sampler.sample(calls, x, SIGMAS.flip(0))
    assert calls.calls == 0
    assert all(isinstance(sampler, Sampler) for sampler, _ in SAMPLERS.values())


@pytest.mark.parametrize(
    ("sampler", "message"),
    [
        (AnnealedLangevin(3, 0.1), r"Langevin sampling diverged.* level 2 \(sigma=\d.*\), step 0\."),
        (ConsistentAnnealed(step_lr=CAS_LR), r"Consistent annealed sampling diverged.* level 2 .*, step 0\."),
        (PredictorCorrector(n_steps_each=2), r"Predictor-corrector sampling diverged.* level 2 .*, step 0\."),
        (ProbabilityFlowODE("euler"), r"Probability-flow ODE diverged.* level 2 .*, step 0\."),
        # Heun's correction of the step from level 1 evaluates level 2
        (ProbabilityFlowODE("heun"), r"Probability-flow ODE diverged.* level 1 .*, step 0\."),
    ],
    ids=["annealed", "consistent", "predictor-corrector", "ode-euler", "ode-heun"],
)
def test_divergence_names_the_sampler_the_level_and_the_step(sampler, message):
    def breaks_at_level_2(x, levels):
        return torch.full_like(x, math.nan) if levels[0] >= 2 else -x

    with pytest.raises(FloatingPointError, match=message):
        sampler.sample(breaks_at_level_2, torch.ones(2, 2), SIGMAS)


# --- step sizes given as "auto": computed from the schedule sampled ---


def test_auto_step_sizes_are_the_papers_rules_on_the_schedule_sampled():
    sigmas = geometric_sigmas(12.37, 0.01, 52)
    gamma = (sigmas[0] / sigmas[1]).item()
    assert AnnealedLangevin(5, "auto").resolve(sigmas).step_lr == pytest.approx(
        step_lr_from_variance_rule(gamma, 0.01, 5), rel=1e-6
    )
    assert ConsistentAnnealed().resolve(sigmas).step_lr == pytest.approx(0.01**2 * (1 - gamma**-2), rel=1e-6)
    assert ConsistentAnnealed(3).resolve(sigmas).step_lr == consistent_ancestral_step_lr(sigmas.tolist(), 3)
    # score_sde's NCSNv2 configs: snr 0.176 for CIFAR-10 (step_lr 6.2e-6), 0.128 for CelebA-64 (3.3e-6), T = 5
    pc = PredictorCorrector("auto", 5)
    assert pc.resolve(geometric_sigmas(50.0, 0.01, 232)).snr == pytest.approx(0.176, abs=1e-3)
    assert pc.resolve(geometric_sigmas(90.0, 0.01, 500)).snr == pytest.approx(0.128, abs=2e-3)
    # numbers stay as they are
    assert AnnealedLangevin(5, 1e-5).resolve(sigmas) == AnnealedLangevin(5, 1e-5)


@pytest.mark.parametrize(
    ("auto", "sigma_conditioned"),
    [(AnnealedLangevin(3, "auto", denoise=True), False), (ConsistentAnnealed(2), True),
     (PredictorCorrector("auto", 2), False)],  # fmt: skip
    ids=["annealed", "consistent", "predictor-corrector"],
)
def test_an_auto_step_samples_as_the_number_it_stands_for(auto, sigma_conditioned):
    resolved = auto.resolve(SIGMAS)
    assert "auto" not in vars(resolved).values()
    seeds = [step_seed(0, k) for k in range(4)]
    score = score_for(sigma_conditioned)
    draw = [seeded_sample(s, score, SIGMAS, (2,), seeds, init_range=(-8.0, 8.0)) for s in (auto, resolved)]
    assert torch.equal(*draw)


def test_consistent_annealed_sampling_by_default_runs_on_any_schedule():
    # the paper's 1.8e-5 (eta 0.18 at sigma_L = 0.01) is outside the range NCSN's ten levels allow: (4.0e-5, 1.6e-4)
    v1 = geometric_sigmas(1.0, 0.01, 10)
    x = ConsistentAnnealed().sample(MIXTURE.score_fn(v1), torch.zeros(3, 2), v1, noise_fn=noise_from(None))
    assert torch.isfinite(x).all()


@pytest.mark.parametrize(
    "make",
    [lambda: AnnealedLangevin(step_lr="fast"), lambda: ConsistentAnnealed(step_lr="Auto"),
     lambda: PredictorCorrector(snr=-0.1)],  # fmt: skip
)
def test_a_step_that_is_neither_positive_nor_auto_is_rejected(make):
    with pytest.raises(ValueError, match="or 'auto'"):
        make()
