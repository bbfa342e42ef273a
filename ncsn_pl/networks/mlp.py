"""A small noise-conditional score MLP for 2-D toy data (the NCSN paper's mixture of Gaussians, §3.2.2)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ncsn_pl.networks.base import ScoreNetwork, check_int, check_score_inputs

__all__ = ["ToyScoreMLP"]


class ToyScoreMLP(ScoreNetwork):
    """Score MLP s(x, sigma_i) = f(x, i) / sigma_i for low-dimensional data.

    ``f`` is a ``dim -> hidden -> hidden -> dim`` Softplus MLP (the width and activation of the official toy
    runner's 2-128-128-2 network, ermongroup/ncsn ``runners/toy_runner.py``) with a learned per-level embedding
    added to the first hidden layer; the output is divided by sigma_i as in NCSNv2. Data are used as they are (no
    ``2x - 1`` centring). The ``sigmas`` buffer holds the schedule the network is given with :meth:`set_sigmas`
    (``ScoreModel`` does); until then the network refuses to run.
    """

    def __init__(self, dim: int = 2, hidden: int = 128, num_scales: int = 10) -> None:
        """Build the network.

        Args:
            dim: data dimension (2 for the toy mixture).
            hidden: width of the two hidden layers.
            num_scales: the number of noise levels L (10 in the toy experiment); one embedding row each.
        """
        super().__init__()
        check_int("dim", dim, 1)
        check_int("hidden", hidden, 1)
        check_int("num_scales", num_scales, 1)
        self.dim, self.hidden, self.num_scales = dim, hidden, num_scales
        self.input = nn.Linear(dim, hidden)
        self.embed = nn.Embedding(num_scales, hidden)
        self.hidden_layer = nn.Linear(hidden, hidden)
        self.output = nn.Linear(hidden, dim)
        self.sigmas: Tensor
        self.register_buffer("sigmas", torch.empty(0))

    def check_data_shape(self, shape: Sequence[int]) -> None:
        """Points of shape ``(dim,)``."""
        shape = tuple(shape)
        if len(shape) != 1:
            raise ValueError(
                f"ToyScoreMLP takes points (D,) but one data item has shape {shape}: use an image network for "
                "images (model.score_net.class_path: ncsn_pl.networks.NCSN or NCSNv2)."
            )
        if shape[0] != self.dim:
            raise ValueError(
                f"ToyScoreMLP was built for {self.dim}-D points but the data are {shape[0]}-D: set "
                f"model.score_net.init_args.dim to {shape[0]}."
            )

    def set_sigmas(self, sigmas: Tensor) -> None:
        """Keep ``sigmas`` (one per level the network was built for) as the float32 buffer it divides by."""
        if sigmas.numel() != self.num_scales:
            raise ValueError(
                f"The score network has {self.num_scales} noise levels but the schedule has {sigmas.numel()}: "
                f"set model.score_net.init_args.num_scales to {sigmas.numel()} (or to ${{model.num_scales}})."
            )
        self.register_buffer("sigmas", sigmas.detach().to(device=self.sigmas.device, dtype=torch.float32).clone())

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
        if self.sigmas.numel() == 0:
            raise ValueError("ToyScoreMLP has no noise schedule yet: ScoreModel gives it one, or call set_sigmas.")
        check_score_inputs("ToyScoreMLP", x, levels, self.num_scales)
        h = F.softplus(self.input(x) + self.embed(levels))
        h = F.softplus(self.hidden_layer(h))
        return self.output(h) / self.sigmas[levels].unsqueeze(1)
