import math

import pytest
import torch

from ncsn_pl.core.distributions import GaussianMixture
from ncsn_pl.core.samplers import annealed_langevin_dynamics, denoise_step, langevin_dynamics, step_sizes
from ncsn_pl.core.seeding import noise_from
from ncsn_pl.core.sigmas import geometric_sigmas


def standard_normal_score(x, levels):
    return -x


@pytest.mark.parametrize("step_size", [0.1, 0.5])
def test_langevin_stationary_variance_on_standard_normal(step_size):
    # x' = (1 - a) x + sqrt(2a) z has stationary variance 1 / (1 - a/2) (code convention)
    g = torch.Generator().manual_seed(0)
    x = langevin_dynamics(
        standard_normal_score,
        torch.zeros(20_000, 4, dtype=torch.float64),
        n_steps=200,
        step_size=step_size,
        noise_fn=noise_from(g),
    )
    assert x.var().item() == pytest.approx(1 / (1 - step_size / 2), rel=0.02)
    assert abs(x.mean().item()) < 0.02


def test_step_sizes_match_spec_table():
    steps = step_sizes(geometric_sigmas(1.0, 0.01, 10), 2e-5)
    assert steps[0].item() == pytest.approx(0.2, rel=1e-6)
    assert steps[4].item() == pytest.approx(3.336201e-03, rel=1e-5)
    assert steps[-1].item() == pytest.approx(2e-5, rel=1e-6)


def test_annealed_langevin_recovers_the_mixture_weights_and_plain_langevin_does_not():
    # NCSN §3.2.2: 0.8 N((5,5), I) + 0.2 N((-5,-5), I), start U[-8, 8]^2
    mixture = GaussianMixture()
    sigmas = geometric_sigmas(20.0, 1.0, 10)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4000, 2, generator=g) * 16 - 8
    annealed = annealed_langevin_dynamics(
        mixture.score_fn(sigmas), x0, sigmas, n_steps_each=100, step_lr=0.1, noise_fn=noise_from(g)
    )
    plain = langevin_dynamics(
        lambda x, levels: mixture.score(x, 0.0), x0, n_steps=1000, step_size=0.1, noise_fn=noise_from(g)
    )
    heavy_annealed = (annealed.sum(1) > 0).float().mean().item()
    heavy_plain = (plain.sum(1) > 0).float().mean().item()
    assert heavy_annealed == pytest.approx(0.80, abs=0.03)
    assert heavy_plain == pytest.approx(0.50, abs=0.04)
    # the samples sit on the modes
    assert (annealed[annealed.sum(1) > 0] - 5).abs().mean().item() < 1.5


def test_callback_reports_every_step_with_diagnostics():
    sigmas = geometric_sigmas(1.0, 0.1, 3)
    reports = []
    x = annealed_langevin_dynamics(
        standard_normal_score,
        torch.zeros(8, 3),
        sigmas,
        n_steps_each=4,
        step_lr=1e-3,
        callback=reports.append,
        noise_fn=noise_from(torch.Generator().manual_seed(0)),
    )
    assert [(r.level, r.step) for r in reports] == [(i, t) for i in range(3) for t in range(4)]
    last = reports[-1]
    assert torch.equal(last.x, x)
    assert last.sigma == pytest.approx(0.1) and last.step_size == pytest.approx(1e-3)
    assert last.snr == pytest.approx(math.sqrt(last.step_size / 2) * last.grad_norm / last.noise_norm)
    assert reports[0].step_size == pytest.approx(1e-3 * 100, rel=1e-5)


def test_sampler_is_reproducible_with_a_generator():
    sigmas = geometric_sigmas(1.0, 0.1, 3)
    run = [
        annealed_langevin_dynamics(
            standard_normal_score,
            torch.zeros(4, 2),
            sigmas,
            n_steps_each=3,
            noise_fn=noise_from(torch.Generator().manual_seed(7)),
        )
        for _ in range(2)
    ]
    assert torch.equal(run[0], run[1])


def test_denoising_step_is_the_posterior_mean_for_gaussian_data():
    mu, s, sigma = 0.4, 0.3, 0.2
    sigmas = torch.tensor([1.0, sigma])
    g = torch.Generator().manual_seed(0)
    x0 = mu + s * torch.randn(200_000, 2, dtype=torch.float64, generator=g)
    x = x0 + sigma * torch.randn(x0.shape, dtype=torch.float64, generator=g)

    def score(xt, levels):
        return -(xt - mu) / (s**2 + sigmas[levels, None].double() ** 2)

    denoised = denoise_step(score, x, sigmas)
    posterior_mean = mu + s**2 / (s**2 + sigma**2) * (x - mu)
    torch.testing.assert_close(denoised, posterior_mean)
    # and it is the least-squares estimate: its error is the posterior variance
    assert ((denoised - x0) ** 2).mean().item() == pytest.approx(s**2 * sigma**2 / (s**2 + sigma**2), rel=0.01)

    sampled = annealed_langevin_dynamics(
        score, x.clone(), sigmas, n_steps_each=1, step_lr=1e-9, denoise=True, noise_fn=noise_from(g)
    )
    assert ((sampled - x0) ** 2).mean().item() < ((x - x0) ** 2).mean().item()


def test_divergence_names_the_level_and_step():
    def exploding(x, levels):  # step 0 reaches 1e30, step 1 overflows float32
        return x * 1e30

    with pytest.raises(FloatingPointError, match=r"level 1 \(sigma=0\.5\), step 1\."):
        annealed_langevin_dynamics(
            lambda x, lv: exploding(x, lv) if lv[0] == 1 else -x,
            torch.ones(2, 2),
            torch.tensor([1.0, 0.5]),
            n_steps_each=5,
            step_lr=1.0,
        )


def test_invalid_sampler_settings_are_rejected():
    with pytest.raises(ValueError, match="n_steps_each"):
        annealed_langevin_dynamics(standard_normal_score, torch.zeros(1, 1), torch.tensor([1.0]), n_steps_each=0)
    with pytest.raises(ValueError, match="step_lr"):
        annealed_langevin_dynamics(standard_normal_score, torch.zeros(1, 1), torch.tensor([1.0]), step_lr=0.0)
