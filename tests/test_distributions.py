import pytest
import torch

from ncsn_pl.core.distributions import GaussianMixture


def test_sampling_matches_weights_and_moments():
    mixture = GaussianMixture()
    x = mixture.sample(50_000, generator=torch.Generator().manual_seed(0))
    assert x.shape == (50_000, 2) and x.dtype == torch.float32
    heavy = x.sum(1) > 0
    assert heavy.float().mean().item() == pytest.approx(0.8, abs=0.01)
    assert x[heavy].mean(0).tolist() == pytest.approx([5, 5], abs=0.03)
    assert x[heavy].std(0).tolist() == pytest.approx([1, 1], abs=0.02)


@pytest.mark.parametrize("sigma", [0.0, 0.5, 3.0])
def test_score_is_the_gradient_of_log_prob(sigma):
    mixture = GaussianMixture([0.3, 0.7], [[0.0, 1.0], [2.0, -1.0]], [0.5, 1.5])
    x = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_()
    (grad,) = torch.autograd.grad(mixture.log_prob(x, sigma).sum(), x)
    torch.testing.assert_close(mixture.score(x.detach(), sigma), grad)


def test_noisy_log_prob_is_the_convolution():
    # one component: N(mu, s^2) * N(0, sigma^2) = N(mu, s^2 + sigma^2)
    mixture = GaussianMixture([1.0], [[1.0, 2.0]], [0.5])
    x = torch.tensor([[0.0, 0.0], [1.0, 2.0]], dtype=torch.float64)
    expected = torch.distributions.Normal(torch.tensor([1.0, 2.0], dtype=torch.float64), (0.25 + 4.0) ** 0.5)
    torch.testing.assert_close(mixture.log_prob(x, 2.0), expected.log_prob(x).sum(1))


def test_bad_mixtures_are_rejected():
    with pytest.raises(ValueError, match="one entry per component"):
        GaussianMixture([1.0], [[0.0], [1.0]], [1.0, 1.0])
    with pytest.raises(ValueError, match="positive"):
        GaussianMixture([1.0, -1.0], [[0.0], [1.0]], [1.0, 1.0])
