"""Improved precision and recall of generated images (Kynkäänniemi, Karras, Laine, Lehtinen, Aila, NeurIPS 2019).

Each feature set is taken as a sample of a manifold: the union of balls around its points, each ball reaching
to the point's k-th nearest neighbour in the same set (Sec. 2, eq. 1):

    f(phi, Phi) = 1  if  ||phi - phi'||_2 <= ||phi' - NN_k(phi', Phi)||_2  for at least one phi' in Phi, else 0,

and (eq. 2)

    precision = 1/|Phi_g| sum_{phi_g} f(phi_g, Phi_r)     (share of generated features inside the real manifold)
    recall    = 1/|Phi_r| sum_{phi_r} f(phi_r, Phi_g)     (share of real features inside the generated manifold)

with k = 3 in the paper. The k-NN computation is torch-fidelity's (``metric_prc.calculate_precision_recall_part``,
the blockwise variant: ``batch_size`` x N distance blocks instead of N x N matrices), which follows the official
code (NVlabs/stylegan2 ``metrics/precision_recall.py``, ``ManifoldEstimator``).

The paper computes the features with VGG-16 (fc2, 4096-d); :class:`~ncsn_pl.metrics.SampleQuality` uses the same
features as FID (Inception pool3), so its values are not comparable with numbers computed on VGG-16 features.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch_fidelity.metric_prc import calculate_precision_recall_part
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

__all__ = ["PrecisionRecall", "precision_recall"]


def precision_recall(
    real_features: Tensor, fake_features: Tensor, neighborhood: int = 3, batch_size: int = 10000
) -> tuple[float, float]:
    """Improved precision and recall of ``fake_features`` against ``real_features`` (Kynkäänniemi et al. 2019, eq. 2).

    Args:
        real_features: (N_r, d) features of real images.
        fake_features: (N_g, d) features of generated images.
        neighborhood: k of the k-NN radii (the paper's k = 3); each set needs more than k points.
        batch_size: rows (and columns) of one block of pairwise distances; memory is about
            ``batch_size * max(N_r, N_g) * 4`` bytes per block.

    Returns:
        (precision, recall), each in [0, 1].

    Raises:
        ValueError: the shapes differ, a set is too small for the k-th neighbour, or a value is not finite.
    """
    for name, f in (("real_features", real_features), ("fake_features", fake_features)):
        if not isinstance(f, Tensor) or f.dim() != 2:
            raise ValueError(f"{name} must be a tensor of shape (N, d), got {getattr(f, 'shape', type(f))}.")
        if f.shape[0] <= neighborhood:
            raise ValueError(
                f"Precision/recall with neighborhood k={neighborhood} needs more than k features per set (a point's "
                f"k-th neighbour besides itself), got {f.shape[0]} in {name}; add images or lower the neighborhood."
            )
        if not bool(torch.isfinite(f).all()):
            raise ValueError(f"{name} contains NaN/inf; the k-NN radii would be meaningless.")
    if real_features.shape[1] != fake_features.shape[1]:
        raise ValueError(
            f"real and generated features differ in dimension: {real_features.shape[1]} vs {fake_features.shape[1]}."
        )
    # torch-fidelity's convention: features_1 generated, features_2 real; it returns (precision, recall)
    fake = fake_features.to(real_features.device, torch.float32)
    precision, recall = calculate_precision_recall_part(fake, real_features.float(), neighborhood, batch_size)
    return float(precision), float(recall)


class PrecisionRecall(Metric):
    """Improved precision and recall as a torchmetrics metric on pre-computed features.

    Keeps the real and generated feature matrices as list states, synced like
    ``torchmetrics.image.kid.KernelInceptionDistance`` (``dist_reduce_fx=None``: the features of all ranks are
    gathered before the k-NN, so every rank computes the values of all images).

    Args:
        num_features: d of the features.
        neighborhood: k of the k-NN radii (Kynkäänniemi et al. 2019 use k = 3).
        batch_size: block size of the pairwise distances (see :func:`precision_recall`).
        reset_real_features: whether :meth:`reset` also drops the real features (as KID's argument).
        **kwargs: torchmetrics ``Metric`` options.
    """

    higher_is_better = True
    is_differentiable = False
    full_state_update = False
    real_features: list[Tensor]
    fake_features: list[Tensor]

    def __init__(
        self,
        num_features: int,
        neighborhood: int = 3,
        batch_size: int = 10000,
        reset_real_features: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        for name, value in (("num_features", num_features), ("neighborhood", neighborhood), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        self.num_features = num_features
        self.neighborhood = neighborhood
        self.batch_size = batch_size
        self.reset_real_features = reset_real_features
        self.add_state("real_features", [], dist_reduce_fx=None)
        self.add_state("fake_features", [], dist_reduce_fx=None)

    def update(self, features: Tensor, real: bool) -> None:
        """Add (N, d) features of real (``real=True``) or generated images."""
        if features.dim() != 2 or features.shape[1] != self.num_features:
            raise ValueError(f"Expected features of shape (N, {self.num_features}), got {tuple(features.shape)}.")
        (self.real_features if real else self.fake_features).append(features.detach())

    def compute(self) -> tuple[Tensor, Tensor]:
        """(precision, recall) over all features (all ranks after the sync)."""
        real = dim_zero_cat(self.real_features) if self.real_features else torch.empty(0, self.num_features)
        fake = dim_zero_cat(self.fake_features) if self.fake_features else torch.empty(0, self.num_features)
        precision, recall = precision_recall(real, fake, self.neighborhood, self.batch_size)
        return torch.tensor(precision), torch.tensor(recall)

    def reset(self) -> None:
        """Reset the states, keeping the real features unless ``reset_real_features``."""
        if self.reset_real_features:
            super().reset()
            return
        kept = list(self.real_features)  # a copy: reset clears the list in place (as torchmetrics FID keeps its own)
        super().reset()
        self.real_features = kept
