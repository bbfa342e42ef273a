"""Analytic distributions with exact scores at every noise level, for testing samplers and toy experiments."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ncsn_pl.core.losses import ScoreFn
from ncsn_pl.core.scores import SigmaScore

__all__ = ["GaussianMixture"]


class GaussianMixture:
    """A mixture of isotropic Gaussians ``sum_k w_k N(mu_k, s_k^2 I)`` with closed-form noisy scores.

    Perturbing with N(0, sigma^2 I) gives ``sum_k w_k N(mu_k, (s_k^2 + sigma^2) I)``, so :meth:`log_prob` and
    :meth:`score` are exact at every sigma. The NCSN toy problem is
    ``GaussianMixture([0.8, 0.2], [[5, 5], [-5, -5]], [1, 1])`` (Song & Ermon 2019, §3.2.2).

    Args:
        weights: mixture weights (positive; normalised to sum to 1).
        means: component means, shape ``(K, D)``.
        stds: per-component standard deviations, shape ``(K,)``.
    """

    def __init__(
        self,
        weights: Sequence[float] = (0.8, 0.2),
        means: Sequence[Sequence[float]] = ((5.0, 5.0), (-5.0, -5.0)),
        stds: Sequence[float] = (1.0, 1.0),
    ) -> None:
        weights_t = torch.as_tensor(weights, dtype=torch.float64)
        means_t = torch.as_tensor(means, dtype=torch.float64)
        stds_t = torch.as_tensor(stds, dtype=torch.float64)
        if means_t.ndim != 2:
            raise ValueError(f"means must have shape (K, D), got {tuple(means_t.shape)}.")
        k = means_t.shape[0]
        if weights_t.shape != (k,) or stds_t.shape != (k,):
            raise ValueError(
                f"weights and stds need one entry per component ({k}), got {tuple(weights_t.shape)} "
                f"and {tuple(stds_t.shape)}."
            )
        if (weights_t <= 0).any() or (stds_t <= 0).any():
            raise ValueError("weights and stds must be positive.")
        self.weights = weights_t / weights_t.sum()
        self.means = means_t
        self.stds = stds_t

    @property
    def dim(self) -> int:
        """The data dimension D."""
        return self.means.shape[1]

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``n`` samples, shape ``(n, D)``, float32."""
        component = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.dim, dtype=torch.float64, generator=generator)
        return (self.means[component] + self.stds[component, None] * noise).float()

    def _variance(self, sigma: float | torch.Tensor) -> torch.Tensor:
        """``s_k^2 + sigma^2``: shape ``(K,)`` for one sigma, ``(N, K)`` for one per point."""
        if isinstance(sigma, torch.Tensor):
            return self.stds**2 + sigma.double().to(self.stds.device).view(-1, 1) ** 2
        return self.stds**2 + sigma**2

    def _component_log_probs(
        self, x: torch.Tensor, sigma: float | torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``log w_k + log N(x; mu_k, (s_k^2 + sigma^2) I)`` of shape (N, K), and ``x - mu_k`` of shape (N, K, D)."""
        variance = self._variance(sigma)
        diff = x.double()[:, None, :] - self.means[None]
        log_norm = -0.5 * self.dim * torch.log(2 * math.pi * variance)
        return torch.log(self.weights) + log_norm - 0.5 * diff.pow(2).sum(-1) / variance, diff

    def nearest_components(self, x: torch.Tensor) -> torch.Tensor:
        """The component each point most likely came from, ignoring the weights: ``argmax_k N(x; mu_k, s_k^2 I)``,
        shape ``(N,)``. With equal stds this is the nearest mean (how the NCSN toy experiment counts the samples
        of each mode, Song & Ermon 2019, Fig. 3)."""
        diff = x.double()[:, None, :] - self.means[None]
        log_likelihood = -self.dim * torch.log(self.stds) - 0.5 * diff.pow(2).sum(-1) / self.stds**2
        return log_likelihood.argmax(dim=1)

    def component_fractions(self, x: torch.Tensor) -> torch.Tensor:
        """The fraction of the points ``x`` (``(N, D)``) assigned to each component by :meth:`nearest_components`,
        shape ``(K,)``, float64; compare it with :attr:`weights`."""
        counts = torch.bincount(self.nearest_components(x), minlength=len(self.weights)).double()
        return counts / max(int(x.shape[0]), 1)

    def log_prob(self, x: torch.Tensor, sigma: float = 0.0) -> torch.Tensor:
        """``log p_sigma(x)`` of the mixture convolved with N(0, sigma^2 I); ``x`` of shape ``(N, D)``."""
        log_probs, _ = self._component_log_probs(x, sigma)
        return torch.logsumexp(log_probs, dim=1).to(x.dtype)

    def score(self, x: torch.Tensor, sigma: float | torch.Tensor = 0.0) -> torch.Tensor:
        """The exact score ``grad_x log p_sigma(x) = sum_k r_k(x) (mu_k - x) / (s_k^2 + sigma^2)``, for one sigma or
        one per point (a tensor of shape ``(N,)``).

        ``r_k`` are the posterior component probabilities under the noisy mixture.
        """
        sigma = sigma if isinstance(sigma, torch.Tensor) else float(sigma)
        log_probs, diff = self._component_log_probs(x, sigma)
        responsibilities = torch.softmax(log_probs, dim=1)
        variance = self._variance(sigma).expand(x.shape[0], -1)
        return -(responsibilities[..., None] * diff / variance[..., None]).sum(1).to(x.dtype)

    def score_fn(self, sigmas: torch.Tensor) -> ScoreFn:
        """A score function ``(x, levels) -> score`` over a schedule, for the samplers."""
        sigma_values = sigmas.tolist()

        def score_fn(x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
            out = torch.empty_like(x)
            for level in levels.unique().tolist():
                mask = levels == level
                out[mask] = self.score(x[mask], sigma_values[level])
            return out

        return score_fn

    def sigma_score_fn(self) -> SigmaScore:
        """The exact score as a sigma-conditioned :class:`~ncsn_pl.core.scores.SigmaScore` ``(x, sigma) -> score``,
        ``sigma`` of shape ``(B,)``: it fits every sampler and every grid."""

        def score_fn(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            return self.score(x, sigma)

        return SigmaScore(score_fn)
