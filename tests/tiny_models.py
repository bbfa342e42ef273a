"""Tiny networks shared by the tests: a per-sample score network and a feature extractor for FID."""

import torch
from torch import nn

from ncsn_pl.networks import ScoreNetwork


class TinyScore(nn.Module):
    """A per-sample score network: a 3x3 convolution scaled per noise level, minus x."""

    def __init__(self, channels: int = 1, num_scales: int = 2) -> None:
        super().__init__()
        self.channels, self.num_scales = channels, num_scales
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.scale = nn.Embedding(num_scales, 1)

    def forward(self, x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * self.scale(levels).view(-1, 1, 1, 1) - x


class TinyFeatures(nn.Module):
    """4 fixed random features of an image (any channels, any size), for FID in tests."""

    num_features = 4

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("proj", torch.randn(8, 4, generator=generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = nn.functional.adaptive_avg_pool2d(x.float().mean(1, keepdim=True), (2, 4)).flatten(1)
        return torch.tanh(3 * pooled @ self.proj)


class ExactToyScore(ScoreNetwork):
    """The exact score of the NCSN toy mixture at each level of the schedule the model hands over (no learning: a
    zero-valued parameter keeps the optimiser busy), for sweeps whose ranking must not depend on short training."""

    def __init__(self, num_scales: int = 10) -> None:
        super().__init__()
        from ncsn_pl.core.distributions import GaussianMixture

        self.mixture = GaussianMixture()
        self.num_scales = num_scales
        self.zero = nn.Parameter(torch.zeros(()))
        self.register_buffer("sigmas", torch.empty(0))

    def set_sigmas(self, sigmas: torch.Tensor) -> None:
        self.sigmas = sigmas.detach().clone()

    def forward(self, x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        score = self.mixture.sigma_score_fn()(x, self.sigmas[levels].to(x.dtype))
        return score + 0 * self.zero
