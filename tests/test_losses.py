import pytest
import torch

from ncsn_pl.core.losses import dsm_loss
from ncsn_pl.core.sigmas import geometric_sigmas

SIGMAS = geometric_sigmas(1.0, 0.01, 10)


def zero_score(x, levels):
    return torch.zeros_like(x)


def test_zero_score_loss_is_half_the_dimension_at_every_sigma():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(20_000, 3, 4, 4, generator=g)
    for level in (0, 5, 9):
        levels = torch.full((x.shape[0],), level)
        loss = dsm_loss(zero_score, x, SIGMAS, levels=levels, generator=g)
        assert loss.shape == (20_000,)
        assert loss.mean().item() == pytest.approx(48 / 2, rel=0.01)


def test_loss_formula_with_pinned_noise_and_levels():
    g = torch.Generator().manual_seed(1)
    x, noise = torch.rand(4, 2, 3, generator=g), torch.randn(4, 2, 3, generator=g)
    levels = torch.tensor([0, 3, 6, 9])

    def score_fn(xt, lv):
        return -xt * (lv.float() + 1).view(-1, 1, 1)

    loss = dsm_loss(score_fn, x, SIGMAS, levels=levels, noise=noise, anneal_power=1.5)
    sigma = SIGMAS[levels].view(-1, 1, 1)
    expected = 0.5 * ((score_fn(x + sigma * noise, levels) + noise / sigma) ** 2).sum((1, 2)) * sigma.flatten() ** 1.5
    torch.testing.assert_close(loss, expected)


def test_optimal_score_for_gaussian_data_attains_the_expected_minimum():
    # data N(mu, s^2 I): the noisy score is -(x - mu)/(s^2 + sigma^2), and
    # E[1/2 ||sigma s* + z||^2] = D/2 * s^2 / (s^2 + sigma^2) (the irreducible part of DSM)
    mu, s, dim = 0.3, 0.5, 8
    sigmas = torch.tensor([2.0, 0.5, 0.1])
    g = torch.Generator().manual_seed(2)
    x = mu + s * torch.randn(100_000, dim, generator=g)

    def optimal(xt, levels):
        var = s**2 + sigmas[levels] ** 2
        return -(xt - mu) / var[:, None]

    for level, sigma in enumerate(sigmas.tolist()):
        levels = torch.full((x.shape[0],), level)
        noise = torch.randn(x.shape, generator=g)
        loss = dsm_loss(optimal, x, sigmas, levels=levels, noise=noise).mean().item()
        expected = dim / 2 * s**2 / (s**2 + sigma**2)
        assert loss == pytest.approx(expected, rel=0.01)
        worse = dsm_loss(lambda xt, lv: 1.1 * optimal(xt, lv), x, sigmas, levels=levels, noise=noise).mean().item()
        assert worse > loss


def test_single_data_point_has_zero_loss_with_its_exact_score():
    x0 = torch.rand(1, 5)
    x = x0.expand(7, 5)
    levels = torch.arange(7) % 10
    loss = dsm_loss(lambda xt, lv: -(xt - x0) / SIGMAS[lv, None] ** 2, x, SIGMAS, levels=levels)
    assert loss.abs().max().item() < 1e-6


def test_levels_are_uniform_when_not_given():
    seen = []

    def record(xt, levels):
        seen.append(levels)
        return torch.zeros_like(xt)

    dsm_loss(record, torch.rand(10_000, 1), SIGMAS, generator=torch.Generator().manual_seed(3))
    counts = torch.bincount(seen[0], minlength=10).float()
    assert counts.min() > 850 and counts.max() < 1150


@pytest.mark.parametrize("levels", [torch.tensor([0, 10]), torch.tensor([-1, 2]), torch.tensor([0.0, 1.0])])
def test_levels_out_of_range_are_rejected(levels):
    with pytest.raises(ValueError, match="levels"):
        dsm_loss(zero_score, torch.rand(2, 3), SIGMAS, levels=levels)
