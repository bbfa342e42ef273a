"""Image preprocessing of NCSN (v1) and NCSNv2, as torchvision transform pipelines.

All pipelines end in ``ToTensor()``, so images come out as float tensors ``(C, H, W)`` with values in [0, 1]
(the repository-wide convention; the networks centre the data with ``2x - 1`` themselves).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torchvision import transforms as T

from ncsn_pl.data.image_decoding import convert_image, repeat_channels

__all__ = ["dequantize", "image_transform"]


def dequantize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform dequantization of 8-bit images in [0, 1]: ``x * 255/256 + u / 256`` with ``u ~ U[0, 1)``.

    NCSN v1 applies it to every training and test batch (ermongroup/ncsn ``runners/anneal_runner.py:136``);
    NCSNv2 turns it off in all configs but ``ncsn_original.yml``. An image with levels ``k/255`` becomes
    ``(k + u)/256``, a sample from the uniform density on the bin ``[k/256, (k+1)/256)``, so the output
    lies in [0, 1) and is no longer on the 1/256 grid.

    Args:
        x: images in [0, 1], any shape.
        generator: optional random generator for ``u``.

    Returns:
        A tensor of the shape and dtype of ``x`` with values in [0, 1).
    """
    noise = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return x * (255.0 / 256.0) + noise / 256.0


def image_transform(
    image_size: int,
    *,
    native_size: int | None = None,
    center_crop: int | None = None,
    square_crop: bool = False,
    channels: int | None = None,
) -> Callable:
    """The PIL-image pipeline of NCSN's data loaders (ermongroup/ncsn ``anneal_runner.py:44-93``).

    Order: [convert(channels) ->] CenterCrop(center_crop) -> Resize(image_size) [-> CenterCrop(image_size)] ->
    ToTensor() [-> repeat(channels)]; the random
    flips and the dequantization of training batches follow on the device (``ImageDataModule.augment``).
    CelebA uses ``center_crop=140``; CIFAR-10 and MNIST only resize when ``image_size`` differs from
    ``native_size``; image folders of any aspect ratio resize the shorter side and crop the centre
    (``square_crop``, as NCSNv2's LSUN pipeline).

    Args:
        image_size: output height and width.
        native_size: the data set's own square size; the resize is skipped when it equals ``image_size``.
        center_crop: size of a centre crop taken before resizing (CelebA: 140), or None.
        square_crop: after resizing the shorter side, crop the centre ``image_size`` square.
        channels: first convert each image by its bit depth into this many channels (1 or 3; images of a folder or
            a Hugging Face data set, whatever their mode: :func:`~ncsn_pl.data.image_decoding.convert_image`), or None.

    Returns:
        A callable mapping a PIL image to a float tensor ``(C, image_size, image_size)`` in [0, 1].
    """
    steps: list[Callable] = []
    if channels is not None:  # partials pickle, for DataLoader workers
        steps.append(T.Lambda(partial(convert_image, channels=channels)))
    if center_crop is not None:
        steps.append(T.CenterCrop(center_crop))
    if center_crop is not None or native_size != image_size:
        steps.append(T.Resize(image_size))
        if square_crop:
            steps.append(T.CenterCrop(image_size))
    steps.append(T.ToTensor())
    if channels is not None and channels != 1:  # a deep grey image is one channel of floats until here
        steps.append(T.Lambda(partial(repeat_channels, channels=channels)))
    return T.Compose(steps)
