"""A small noise-conditional score MLP for 2-D toy data (the NCSN paper's mixture of Gaussians, §3.2 / App.
B)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ncsn_pl.core.sigmas import geometric_sigmas
from ncsn_pl.networks.ncsn import _check_int, check_score_inputs

__all__ = ["ToyScoreMLP"]


class ToyScoreMLP(nn.Module):
    """Score MLP s(x, sigma_i) = f(x, i) / sigma_i for low-dimensional data.

    ``f`` is a ``dim -> hidden -> hidden -> dim`` Softplus MLP (the width and activation of the official toy
    runner's 2-128-128-2 network) with a learned per-level embedding added to the first hidden layer; the
    output is divided by sigma_i as in NCSNv2. Data are used as they are (no ``2x - 1`` centring). The
    ``sigmas`` buffer holds the geometric schedule of the paper's toy experiment (20 down to 1, 10 levels) and
    may be overwritten in place with ``net.sigmas.copy_(sigmas)``.
    """

    def __init__(
        self,
        dim: int = 2,
        hidden: int = 128,
        num_scales: int = 10,
        sigma_max: float = 20.0,
        sigma_min: float = 1.0,
    ) -> None:
        """Build the network.

        Args:
            dim: data dimension (2 for the toy mixture).
            hidden: width of the two hidden layers.
            num_scales: the number of noise levels L (10 in the toy experiment).
            sigma_max: the largest sigma (NCSN's ``sigma_begin``; 20 in the toy experiment).
            sigma_min: the smallest sigma (1 in the toy experiment).
        """
        super().__init__()
        _check_int("dim", dim, 1)
        _check_int("hidden", hidden, 1)
        sigmas = geometric_sigmas(sigma_max, sigma_min, num_scales)
        self.dim, self.hidden, self.num_scales = dim, hidden, num_scales
        self.channels = dim
        self.sigma_max, self.sigma_min = float(sigma_max), float(sigma_min)
        self.input = nn.Linear(dim, hidden)
        self.embed = nn.Embedding(num_scales, hidden)
        self.hidden_layer = nn.Linear(hidden, hidden)
        self.output = nn.Linear(hidden, dim)
        self.sigmas: Tensor
        self.register_buffer("sigmas", sigmas)

    def forward(self, x: Tensor, levels: Tensor) -> Tensor:
        """The score at noise level ``levels``.

        Args:
            x: points, shape ``(B, dim)``.
            levels: noise-level indices, LongTensor of shape ``(B,)`` in ``[0, num_scales)``.

        Returns:
            The score, shape ``(B, dim)``.
        """
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"ToyScoreMLP expects x of shape (B, {self.dim}), got shape {tuple(x.shape)}.")
        check_score_inputs("ToyScoreMLP", x, levels, self.num_scales)
        h = F.softplus(self.input(x) + self.embed(levels))
        h = F.softplus(self.hidden_layer(h))
        return self.output(h) / self.sigmas[levels].unsqueeze(1)
