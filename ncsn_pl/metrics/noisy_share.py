"""The share of a sample set noisier than the data: the samples whose total variation exceeds that of every one of a
set of real images. A sampler that leaves part of its samples unconverged, or diverges, shows here before it shows
in FID, which only grows (a high FID does not say whether the samples are poor images or noise)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ncsn_pl.data.contract import ShapedData, split_reader

__all__ = ["NOISY_SHARE_IMAGES", "NoiseReference", "NoisyShare", "noise_reference", "total_variation"]

NOISY_SHARE_IMAGES = 1000
"""Real images the threshold is taken over by default: the first 1,000 of the held-out split."""


def total_variation(images: Tensor) -> Tensor:
    """Per image, the mean absolute difference of vertical neighbours plus that of horizontal neighbours, of the
    images clamped to [0, 1] (uint8 images are read as ``x / 255``): 0 for a flat image, 2 for a checkerboard.

    Args:
        images: ``(N, C, H, W)``, float in [0, 1] (values outside are clamped) or uint8.

    Returns:
        ``(N,)`` float32.
    """
    x = images.float() / 255 if not images.is_floating_point() else images.float()
    x = x.clamp(0, 1)
    vertical = (x[..., 1:, :] - x[..., :-1, :]).abs().mean((1, 2, 3))
    horizontal = (x[..., :, 1:] - x[..., :, :-1]).abs().mean((1, 2, 3))
    return vertical + horizontal


@dataclass(frozen=True)
class NoiseReference:
    """The real images a sample is compared with: a sample is noisy when its :func:`total_variation` exceeds
    ``threshold``, the largest of theirs.

    Attributes:
        threshold: the largest total variation of the real images.
        split: the data's split they come from.
        num_images: how many (the first ones of the split).
        image_shape: the shape of one image, ``(C, H, W)``; samples of another shape do not compare.
    """

    threshold: float
    split: str
    num_images: int
    image_shape: tuple[int, ...]

    def describe(self) -> dict[str, Any]:
        """The reference as a record entry."""
        return {"split": self.split, "num_images": self.num_images, "threshold": self.threshold}

    def mismatch(self, shape: tuple[int, ...]) -> str | None:
        """Why samples of ``shape`` (one sample's) do not compare with these images, or None when they do."""
        if tuple(shape) == self.image_shape:
            return None
        return (
            f"the samples are {'x'.join(map(str, shape))} but the real images "
            f"{'x'.join(map(str, self.image_shape))}"
        )


def noise_reference(
    datamodule: Any, split: str = "val", num_images: int = NOISY_SHARE_IMAGES
) -> NoiseReference | None:
    """The :class:`NoiseReference` of the first ``num_images`` images of ``split`` of an image DataModule (one with
    ``<split>_data(max_items)`` and a ``(C, H, W)`` ``data_shape``: :mod:`ncsn_pl.data.contract`; ``split`` is
    ``train`` or ``val``); None for data that are not images.

    Raises:
        OSError, RuntimeError, ValueError: the DataModule cannot read its images (missing or corrupt files).
    """
    read = split_reader(datamodule, split)
    if read is None or not isinstance(datamodule, ShapedData) or len(tuple(datamodule.data_shape or ())) != 3:
        return None
    datamodule.setup("fit")
    images = read(num_images)
    return NoiseReference(float(total_variation(images).max()), split, int(images.shape[0]), tuple(images.shape[1:]))


class NoisyShare:
    """Counts the samples noisier than a :class:`NoiseReference`, batch by batch (on any device).

    Args:
        reference: the real images' threshold.
    """

    def __init__(self, reference: NoiseReference) -> None:
        self.reference = reference
        self.noisy = 0
        self.total = 0

    def update(self, samples: Tensor) -> None:
        """Count a batch of samples ``(N, C, H, W)`` (float in [0, 1], unclamped, or uint8); a sample with a NaN
        or infinite value counts as noisy.

        Raises:
            ValueError: the samples' shape is not the real images'.
        """
        if (reason := self.reference.mismatch(tuple(samples.shape[1:]))) is not None:
            raise ValueError(f"The noisy share compares images of one shape: {reason}.")
        noisy = (total_variation(samples) > self.reference.threshold) | ~torch.isfinite(samples).flatten(1).all(1)
        self.noisy += int(noisy.sum())
        self.total += int(samples.shape[0])

    def counts(self) -> Tensor:
        """``[noisy, total]`` as a float64 tensor, for adding over processes."""
        return torch.tensor([self.noisy, self.total], dtype=torch.float64)

    @staticmethod
    def share(counts: Tensor) -> float | None:
        """``noisy / total`` of :meth:`counts` (added over processes), None without samples."""
        noisy, total = counts.tolist()
        return noisy / total if total else None
