"""How an image's pixels become numbers in [0, 1]: each image scaled by its own bit depth, in 1 or 3 channels; and
the headers of a set of images, read before training so that a file that is not an image is named at once.

PIL decodes most files to 8 bits per channel: grey ``L``, ``RGB``, ``RGBA``, palette ``P``, 1-bit, CMYK (16-bit RGB and
RGBA PNGs too, keeping the high byte of each sample). Those are converted by PIL to ``L`` or ``RGB``: alpha dropped,
palettes looked up, colour to grey by ITU-R 601-2 luma. Grey images of more bits (16-bit PNGs and TIFFs, typical of
microscopy; unsigned 32-bit TIFFs) are divided by ``2**bits - 1`` into a float image (PIL mode ``F``), so resizing
keeps their precision; as tensors they are repeated into 3 channels when 3 are asked for. Floating-point and signed
pixels have no range to scale by and are refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms.functional import to_tensor

__all__ = [
    "GREY_MODES",
    "ImageHeader",
    "bit_depth",
    "check_headers",
    "convert_image",
    "image_channels",
    "image_tensor",
    "is_grey",
    "repeat_channels",
]

# PIL modes of 8 bits (or fewer) per channel, which PIL itself converts to "L" and "RGB"
EIGHT_BIT_MODES = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"})
# PIL modes of one channel of more than 8 bits
DEEP_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
GREY_MODES = frozenset({"1", "L", "LA", "La", *DEEP_MODES})
_TIFF_BITS_PER_SAMPLE, _TIFF_SAMPLE_FORMAT = 258, 339
# what PIL raises for a file it cannot identify or decode
READ_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError)


def bit_depth(image: Image.Image) -> int:
    """Bits per sample of ``image``: 8 for PIL's 8-bit modes, 16 for ``I;16``, and for ``I`` 16 in a PNG (older
    Pillow's mode for 16-bit grey) or the ``BitsPerSample`` of an unsigned-integer TIFF.

    Raises:
        ValueError: pixels without a range to scale by (floating-point, signed) or a mode PIL cannot convert.
    """
    mode = image.mode
    if mode in EIGHT_BIT_MODES:
        return 8
    if mode.startswith("I;16"):
        return 16
    if mode == "I":
        if image.format == "PNG":
            return 16
        tags = getattr(image, "tag_v2", None) or {}
        bits, sample_format = tags.get(_TIFF_BITS_PER_SAMPLE), tags.get(_TIFF_SAMPLE_FORMAT, (1,))
        bits = bits[0] if isinstance(bits, tuple) else bits
        sample_format = sample_format[0] if isinstance(sample_format, tuple) else sample_format
        if bits in (16, 32) and sample_format == 1:
            return int(bits)
        raise ValueError(
            f"its pixels are {'signed ' if sample_format == 2 else ''}{bits or 32}-bit integers, which have no fixed "
            "range; save it as an unsigned 8- or 16-bit image"
        )
    kind = "floating-point" if mode == "F" else f"PIL mode {mode!r}"
    raise ValueError(f"its pixels are {kind}, which has no fixed range; save it as an 8- or 16-bit image")


def image_channels(image: Image.Image) -> int:
    """1 for a grey image (grey modes, with or without alpha), 3 otherwise (palette images count as colour)."""
    return 1 if image.mode in GREY_MODES else 3


def convert_image(image: Image.Image, channels: int) -> Image.Image:
    """``image`` as ``L`` (``channels`` 1) or ``RGB`` (3) when it holds 8 bits per channel; a grey image of more bits
    as mode ``F`` with values in [0, 1] (divided by ``2**bits - 1``), whatever ``channels``.

    Raises:
        ValueError: see :func:`bit_depth`.
    """
    depth = bit_depth(image)
    if depth == 8:
        return image.convert("L" if channels == 1 else "RGB")
    pixels = np.asarray(image, dtype=np.float64) / (2**depth - 1)
    return Image.fromarray(pixels.astype(np.float32), mode="F")


def repeat_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """A one-channel image ``(1, H, W)`` repeated into ``channels``; any other image unchanged."""
    return x.expand(channels, -1, -1) if x.shape[0] == 1 and channels != 1 else x


def image_tensor(image: Image.Image, channels: int) -> torch.Tensor:
    """``image`` as a float tensor ``(channels, H, W)`` in [0, 1], scaled by its bit depth (:func:`convert_image`)."""
    return repeat_channels(to_tensor(convert_image(image, channels)), channels)


def is_grey(image: Image.Image) -> bool:
    """Whether every pixel of ``image`` is grey: a grey mode, or colour channels that are equal everywhere
    (``torchvision.utils.save_image`` writes one-channel images as RGB)."""
    if image.mode in GREY_MODES:
        return True
    rgb = np.asarray(image.convert("RGB"))
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header says: where it is, its size ``(width, height)``, its channels (1 grey, 3 colour)."""

    source: str
    size: tuple[int, int]
    channels: int


def check_headers(sources: Sequence[str], open_image: Callable[[int], Image.Image], what: str) -> list[ImageHeader]:
    """The header of every image (PIL reads no pixels), or one line that names the images that cannot be used.

    Args:
        sources: a name per image (its path), for the headers and the message.
        open_image: opens image ``i`` (``PIL.Image.open``, lazily: the pixels are not decoded).
        what: how to fix it, for the message (e.g. "delete or replace it").

    Raises:
        ValueError: an image that PIL cannot identify, or whose pixels have no range to scale by
            (:func:`bit_depth`); the message names the first with its path and counts the others.
    """
    headers, bad = [], []
    for index, source in enumerate(sources):
        try:
            with open_image(index) as image:
                header = ImageHeader(source, image.size, image_channels(image))
                try:
                    bit_depth(image)
                except ValueError as err:
                    bad.append((source, str(err)))
                    continue
        except READ_ERRORS as err:
            detail = type(err).__name__ if source in str(err) or not str(err) else f"{type(err).__name__}: {err}"
            bad.append((source, f"not an image PIL can read ({detail})"))
            continue
        headers.append(header)
    if bad:
        (source, reason), others = bad[0], [s for s, _ in bad[1:]]
        more = f" ({len(others)} more: {_names(others)})" if others else ""
        raise ValueError(f"Cannot use image {source!r}: {reason}{more}. {what}.")
    return headers


def _names(sources: Iterable[str], limit: int = 3) -> str:
    sources = list(sources)
    return ", ".join(sources[:limit]) + (", ..." if len(sources) > limit else "")
