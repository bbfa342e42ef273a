"""Feature extractors of the sample-quality metrics: the TF-FID Inception network and a pass-through."""

from __future__ import annotations

import os
import warnings
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.image.fid import NoTrainInceptionV3

from ncsn_pl.data.image_files import quantize_images
from ncsn_pl.metrics.inception_weights import has_classifier_head

__all__ = ["RESIZES", "InceptionFeatureExtractor", "PrecomputedFeatures", "Resize", "extractor_input"]

# How images reach Inception's 299 x 299 input (see :class:`InceptionFeatureExtractor`).
Resize = Literal["tf1", "pytorch-fid"]
RESIZES: tuple[str, ...] = get_args(Resize)
# the layers from the input to the 2048-d pool3 features (torch-fidelity's ``FeatureExtractorInceptionV3``)
_POOL3_LAYERS = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
                 "MaxPool_2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                 "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "AvgPool")  # fmt: skip


def extractor_input(images: Tensor, device: torch.device, *, inception: bool, quantize: bool) -> Tensor:
    """Images as a feature extractor takes them: uint8 RGB for Inception, floats in [0, 1] (the 256 ``save_image``
    levels when ``quantize``) for a custom extractor; NaN/inf are warned about and scored as ``save_image`` would
    write them.

    Args:
        images: (N, C, H, W) float in [0, 1] or uint8; for Inception C is 3 or 1 (gray becomes RGB).
        device: where the extractor runs.
        inception: whether the extractor is :class:`InceptionFeatureExtractor`.
        quantize: round float images to 8 bits (custom extractors only; Inception always gets uint8).
    """
    if not isinstance(images, Tensor) or images.dim() < 2 or images.shape[0] == 0:
        raise ValueError("images must be a non-empty tensor of shape (N, C, H, W).")
    if images.is_floating_point() and not bool(torch.isfinite(images).all()):
        bad = int((~torch.isfinite(images.flatten(1))).any(1).sum())
        warnings.warn(
            f"{bad} of {images.shape[0]} images contain NaN/inf (a diverged sampler?); they are scored "
            "as save_image would write them (NaN -> 0, +inf -> 255).",
            stacklevel=4,
        )
        images = torch.nan_to_num(images, nan=0.0)
    x = images.to(device)
    if inception:
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"Inception needs images of shape (N, 3 or 1, H, W), got {tuple(x.shape)}.")
        x = quantize_images(x)
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
    if x.dtype == torch.uint8:
        return x.float() / 255
    return quantize_images(x).float() / 255 if quantize else x


class InceptionFeatureExtractor(nn.Module):
    """torch-fidelity's FID Inception-v3 (via torchmetrics' ``NoTrainInceptionV3``), 2048-d pool3 features.

    Two ways of bringing the uint8 images to the network's 299 x 299 input give different features, and so different
    FIDs, for the same images (most for small images such as CIFAR-10's 32 px):

    - ``"tf1"``: TensorFlow 1.x's bilinear resize of the 0..255 values (``align_corners=False`` without half-pixel
      centres), then ``(x - 128) / 128``: what TTUR's and the official TF FID code compute inside the graph, and
      torch-fidelity reproduces (``interpolate_bilinear_2d_like_tensorflow1x``).
    - ``"pytorch-fid"``: mseitzer/pytorch-fid's ``InceptionV3.forward``: the image in [0, 1] (``uint8 / 255``) resized
      by ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``, then ``2x - 1``; NCSNv2's
      ``evaluation/fid_score.py`` is a port of it.

    Args:
        weights_path: a torch-fidelity state dict (see :func:`resolve_inception_weights`).
        resize: ``"tf1"`` or ``"pytorch-fid"`` (above).
    """

    num_features: int = 2048

    def __init__(self, weights_path: str | os.PathLike[str], resize: Resize = "tf1") -> None:
        super().__init__()
        if resize not in RESIZES:
            raise ValueError(f"resize must be one of {', '.join(RESIZES)}, got {resize!r}.")
        self.resize = resize
        self.net = NoTrainInceptionV3(
            name="inception-v3-compat",
            features_list=["2048"],
            feature_extractor_weights_path=str(weights_path),
            antialias=False,
        )
        self.net.requires_grad_(False)
        self.has_classifier = has_classifier_head({"fc.weight": self.net.fc.weight})

    def forward(self, images: Tensor) -> Tensor:
        """uint8 images (N, 3, H, W) -> features (N, 2048), resized to 299 px as ``resize`` says."""
        if self.resize == "tf1":
            return self.net(images)  # torch-fidelity's forward: the TF 1.x resize and (x - 128) / 128 inside
        x = F.interpolate(images.float() / 255, size=(299, 299), mode="bilinear", align_corners=False)
        return self.pool3(2 * x - 1)

    def pool3(self, x: Tensor) -> Tensor:
        """The pool3 features (N, 2048) of network inputs (N, 3, 299, 299) already resized and scaled."""
        for name in _POOL3_LAYERS:
            x = getattr(self.net, name)(x)
        return torch.flatten(x, 1)

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
