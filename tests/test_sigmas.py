import math

import pytest
import torch

from ncsn_pl.core.sigmas import (
    geometric_sigmas,
    langevin_variance_ratio,
    max_pairwise_distance,
    num_scales_from_ratio_rule,
    ratio_rule_value,
    step_lr_from_variance_rule,
)

# the v1 schedule of the official code (ermongroup/ncsn ``runners/anneal_runner.py``)
V1_SIGMAS = [
    1.0,
    0.5994842503,
    0.3593813664,
    0.2154434690,
    0.1291549665,
    0.0774263683,
    0.0464158883,
    0.0278255940,
    0.0166810054,
    0.0100000000,
]


def test_geometric_sigmas_match_the_v1_table():
    sigmas = geometric_sigmas(1.0, 0.01, 10)
    assert sigmas.dtype == torch.float32 and sigmas.shape == (10,)
    torch.testing.assert_close(sigmas, torch.tensor(V1_SIGMAS), rtol=1e-7, atol=0)
    ratios = sigmas[:-1] / sigmas[1:]
    torch.testing.assert_close(ratios, torch.full((9,), 1.6681005372), rtol=1e-6, atol=0)


def test_single_scale_schedule():
    assert geometric_sigmas(0.01, 0.01, 1).tolist() == pytest.approx([0.01])


@pytest.mark.parametrize(
    "args, message",
    [
        ((0.01, 1.0, 10), "must be smaller than sigma_max"),
        ((1.0, 1.0, 10), "must be smaller than sigma_max"),
        ((1.0, 0.0, 10), "sigma_min must be a finite positive"),
        ((-1.0, 0.01, 10), "sigma_max must be a finite positive"),
        ((float("nan"), 0.01, 10), "sigma_max must be a finite positive"),
        ((float("inf"), 0.01, 10), "sigma_max must be a finite positive"),
        ((1.0, 0.01, 0), "num_scales must be an integer >= 1"),
        ((1.0, 0.5, 1), "sigma_min equal to sigma_max"),
    ],
)
def test_impossible_schedules_are_rejected(args, message):
    with pytest.raises(ValueError, match=message):
        geometric_sigmas(*args)


def test_max_pairwise_distance_is_exact_on_small_sets():
    x = torch.rand(50, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    distance, exact = max_pairwise_distance(x, chunk_size=7)
    flat = x.flatten(1).double()
    brute = max((flat[i] - flat[j]).norm().item() for i in range(50) for j in range(50))
    assert exact and distance == pytest.approx(brute, rel=1e-10)


def test_max_pairwise_distance_estimate_on_large_sets_is_a_close_lower_bound():
    x = torch.rand(400, 8, generator=torch.Generator().manual_seed(1))
    true, _ = max_pairwise_distance(x)
    estimate, exact = max_pairwise_distance(
        x, max_exact=100, num_anchors=100, generator=torch.Generator().manual_seed(2)
    )
    assert not exact
    assert 0.9 * true <= estimate <= true


def test_ratio_rule_reproduces_the_released_configs():
    # the official configs' (sigma_1, L) give 0.567; exactly 0.5 would need L = 219.2 / 472.2
    for sigma_max, num_scales, dim, value, exact_l in [(50, 232, 3072, 0.5670, 219.2), (90, 500, 12288, 0.5669, 472.2)]:
        gamma = (sigma_max / 0.01) ** (1 / (num_scales - 1))
        assert ratio_rule_value(gamma, dim) == pytest.approx(value, abs=1e-4)
        rounded, exact = num_scales_from_ratio_rule(sigma_max, 0.01, dim)
        assert exact == pytest.approx(exact_l, abs=0.05)
        assert rounded == math.ceil(exact)


def test_variance_rule_reproduces_the_step_sizes_of_spec_4_3():
    for gamma, steps, expected in [
        (1.037559, 5, 6.18e-6),
        (1.018414, 5, 3.34e-6),
        (1.009122, 3, 1.77e-6),
        (1.004537, 3, 8.93e-7),
    ]:
        step_lr = step_lr_from_variance_rule(gamma, 0.01, steps)
        assert step_lr == pytest.approx(expected, rel=5e-3)
        # it is the minimiser and the ratio stays above 1
        best = langevin_variance_ratio(step_lr, gamma, 0.01, steps)
        assert best > 1
        assert best <= langevin_variance_ratio(step_lr * 1.05, gamma, 0.01, steps)
        assert best <= langevin_variance_ratio(step_lr / 1.05, gamma, 0.01, steps)


def test_variance_rule_matches_simulated_langevin_variance():
    # T steps x <- x + a s + sqrt(2a) z on N(0, sigma_i^2) from N(0, sigma_{i-1}^2)
    gamma, sigma_min, steps, step_lr = 1.2, 0.01, 4, 2e-5
    a = step_lr  # at the last level a = step_lr * sigma_L^2 / sigma_L^2
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400_000, dtype=torch.float64, generator=g) * gamma * sigma_min
    for _ in range(steps):
        x = x - a * x / sigma_min**2 + math.sqrt(2 * a) * torch.randn(x.shape, dtype=torch.float64, generator=g)
    simulated = (x.var() / sigma_min**2).item()
    assert simulated == pytest.approx(langevin_variance_ratio(step_lr, gamma, sigma_min, steps), rel=1e-2)
