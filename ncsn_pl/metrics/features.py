"""Feature extractors of the sample-quality metrics: the TF-FID Inception network and a pass-through."""

from __future__ import annotations

import os

from torch import Tensor, nn
from torchmetrics.image.fid import NoTrainInceptionV3

from ncsn_pl.metrics.inception_weights import has_classifier_head

__all__ = ["InceptionFeatureExtractor", "PrecomputedFeatures"]


class InceptionFeatureExtractor(nn.Module):
    """torch-fidelity's FID Inception-v3 (via torchmetrics' ``NoTrainInceptionV3``), 2048-d pool3 features.

    Args:
        weights_path: a torch-fidelity state dict (see :func:`resolve_inception_weights`).
    """

    num_features: int = 2048

    def __init__(self, weights_path: str | os.PathLike[str]) -> None:
        super().__init__()
        self.net = NoTrainInceptionV3(
            name="inception-v3-compat",
            features_list=["2048"],
            feature_extractor_weights_path=str(weights_path),
            antialias=False,
        )
        self.net.requires_grad_(False)
        self.has_classifier = has_classifier_head({"fc.weight": self.net.fc.weight})

    def forward(self, images: Tensor) -> Tensor:
        """uint8 images (N, 3, H, W) -> features (N, 2048); resized to 299 px like TF 1.x inside."""
        return self.net(images)

    def logits(self, features: Tensor) -> Tensor:
        """1008-way logits without bias (torch-fidelity's ``logits_unbiased``) for the Inception Score."""
        return features @ self.net.fc.weight.T


class PrecomputedFeatures(nn.Module):
    """Identity 'feature extractor' so the torchmetrics metrics accept features computed once outside them."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features
