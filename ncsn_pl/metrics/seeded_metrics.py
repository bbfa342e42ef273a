"""KID and the Inception Score with their random subsets and splits drawn from a generator of their own.

torchmetrics draws KID's subsets and the Inception Score's shuffle from torch's global generator, so the same images
get another value after anything else drew from it (training, sampling, another metric), and DDP ranks may disagree.
These subclasses draw them from a CPU generator seeded by ``seed`` on every ``compute()``: the same images give the
same numbers in the training callback, in the ``fid`` command, in a resumed run and on every rank. The estimators are
torchmetrics' unchanged (KID: Bińkowski et al. 2018, the unbiased polynomial-kernel MMD averaged over subsets, as
torchmetrics ``image/kid.py``; IS: Salimans et al. 2016, ``exp(E KL(p(y|x) || p(y)))`` per split, as torchmetrics
``image/inception.py``), and with ``torch.manual_seed(step_seed(seed, k))`` torchmetrics would draw the same subsets
(``k`` = 0 for KID, 1 for IS).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance, poly_mmd
from torchmetrics.utilities.data import dim_zero_cat

from ncsn_pl.core.seeding import step_seed

__all__ = ["KID_STREAM", "IS_STREAM", "SeededInceptionScore", "SeededKernelInceptionDistance"]

# the counters that key each metric's generator: step_seed(seed, stream)
KID_STREAM, IS_STREAM = 0, 1


def _generator(seed: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(step_seed(seed, stream))


class SeededKernelInceptionDistance(KernelInceptionDistance):
    """torchmetrics' KID with its ``subsets`` random subsets drawn from a generator seeded by ``seed``.

    Args:
        seed: keys the subsets (``step_seed(seed, KID_STREAM)``).
        **kwargs: torchmetrics ``KernelInceptionDistance``'s arguments.
    """

    def __init__(self, *args: Any, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seed = seed

    def compute(self) -> tuple[Tensor, Tensor]:
        """Mean and (biased) standard deviation of the MMD^2 estimate over the subsets."""
        real = dim_zero_cat(self.real_features)
        fake = dim_zero_cat(self.fake_features)
        if min(real.shape[0], fake.shape[0]) < self.subset_size:
            raise ValueError("Argument `subset_size` should be smaller than the number of samples")
        generator = _generator(self.seed, KID_STREAM)
        scores = []
        for _ in range(self.subsets):
            # a subset of each set, real first (torchmetrics' order)
            f_real = real[torch.randperm(real.shape[0], generator=generator)[: self.subset_size].to(real.device)]
            f_fake = fake[torch.randperm(fake.shape[0], generator=generator)[: self.subset_size].to(fake.device)]
            scores.append(poly_mmd(f_real, f_fake, self.degree, self.gamma, self.coef))
        kid = torch.stack(scores)
        return kid.mean(), kid.std(unbiased=False)


class SeededInceptionScore(InceptionScore):
    """torchmetrics' Inception Score with the images shuffled into ``splits`` by a generator seeded by ``seed``.

    Args:
        seed: keys the shuffle (``step_seed(seed, IS_STREAM)``).
        **kwargs: torchmetrics ``InceptionScore``'s arguments.
    """

    def __init__(self, *args: Any, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seed = seed

    def compute(self) -> tuple[Tensor, Tensor]:
        """Mean and (unbiased) standard deviation of ``exp(E_x KL(p(y|x) || p(y)))`` over the splits."""
        logits = dim_zero_cat(self.features)
        logits = logits[torch.randperm(logits.shape[0], generator=_generator(self.seed, IS_STREAM)).to(logits.device)]
        prob, log_prob = logits.softmax(dim=1), logits.log_softmax(dim=1)
        scores = []
        for p, log_p in zip(prob.chunk(self.splits, dim=0), log_prob.chunk(self.splits, dim=0), strict=True):
            # p(y) of the split, then the mean KL divergence of each p(y|x) from it
            marginal = p.mean(dim=0, keepdim=True)
            scores.append((p * (log_p - marginal.log())).sum(dim=1).mean().exp())
        score = torch.stack(scores)
        return score.mean(), score.std()
