"""Image files: the images found under a directory (a data set without labels), and samples written as PNGs.

Samples are written as the papers wrote theirs, with ``torchvision.utils.save_image``'s 8-bit rounding
(:func:`quantize_images`); FID scores images through the same rounding, so a folder of written samples and the
samples themselves give the same number.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.utils import make_grid

from ncsn_pl.data.image_decoding import READ_ERRORS, ImageHeader, check_headers, convert_image
from ncsn_pl.system.files import atomic_write

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageFiles",
    "find_images",
    "quantize_images",
    "read_headers",
    "read_image",
    "save_grid",
    "upscale_factor",
    "upscale_nearest",
    "write_png",
]

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def find_images(root: str | Path) -> list[Path]:
    """All image files under ``root`` (recursively), sorted by path so the order is the same on every machine.

    Args:
        root: a directory.

    Returns:
        The paths whose suffix (any case) is one of :data:`IMAGE_EXTENSIONS`.

    Raises:
        FileNotFoundError: ``root`` is not a directory.
        ValueError: no image file was found under ``root``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"Image folder {str(root)!r} does not exist or is not a directory. Set data.root to a directory "
            f"that holds images ({', '.join(IMAGE_EXTENSIONS)}), in any sub-folders."
        )
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise ValueError(
            f"No images found under {str(root)!r} (looked recursively for {', '.join(IMAGE_EXTENSIONS)}). "
            "Set data.root to a directory of images, or choose a built-in data.dataset."
        )
    return files


def read_image(path: str | Path, channels: int | None = None) -> Image.Image:
    """Open and fully decode one image; with ``channels`` (1 or 3), converted by its bit depth
    (:func:`~ncsn_pl.data.image_decoding.convert_image`: ``L`` or ``RGB``, or ``F`` in [0, 1] for deeper grey).

    Raises:
        RuntimeError: the file cannot be decoded; the message names the file.
    """
    try:
        with Image.open(path) as image:
            image.load()
            return convert_image(image, channels) if channels is not None else image.copy()
    except READ_ERRORS as err:
        raise RuntimeError(
            f"Cannot read image file {str(path)!r} ({type(err).__name__}: {err}). "
            "The file is corrupt or not an image; delete or replace it."
        ) from err


def read_headers(files: Sequence[str | Path]) -> list[ImageHeader]:
    """The header of every image file (no pixels are decoded), or one ``ValueError`` line that names each file that
    is not an image PIL can read, or whose pixels have no range (:func:`~ncsn_pl.data.image_decoding.check_headers`)."""
    return check_headers([str(f) for f in files], lambda i: Image.open(files[i]), "Delete or replace the file(s)")


class ImageFiles(Dataset):
    """Images from a list of files, each read with :func:`read_image` (and passed through ``transform``).

    Args:
        files: image paths.
        channels: 1 or 3, the channels every image is converted to (deeper grey images become mode ``F``, see
            :func:`read_image`), or None to keep each file's own mode.
        transform: optional map from a PIL image to a tensor; without it items are PIL images.
    """

    def __init__(
        self, files: Sequence[str | Path], channels: int | None = 3, transform: Callable | None = None
    ) -> None:
        self.files = [Path(f) for f in files]
        self.channels = channels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Image.Image | torch.Tensor:
        image = read_image(self.files[index], self.channels)
        return self.transform(image) if self.transform is not None else image


def quantize_images(x: Tensor) -> Tensor:
    """Quantise images in [0, 1] to uint8 exactly like ``torchvision.utils.save_image``.

    ``uint8((x * 255 + 0.5).clamp(0, 255))``: rounds to the nearest level, values outside [0, 1] are clipped.
    uint8 input is returned unchanged.

    Args:
        x: float images, any shape.

    Returns:
        uint8 tensor of the same shape.
    """
    if x.dtype == torch.uint8:
        return x
    if not x.is_floating_point():
        raise ValueError(f"Images must be float in [0, 1] or uint8 in [0, 255], got dtype {x.dtype}.")
    return (x * 255 + 0.5).clamp_(0, 255).to(torch.uint8)


def write_png(image: Tensor, path: str | Path) -> None:
    """One image ``(C, H, W)`` in [0, 1] as an 8-bit PNG, quantised by :func:`quantize_images`; written atomically."""
    array = quantize_images(image.detach().cpu()).permute(1, 2, 0).numpy()
    with atomic_write(path) as file:
        Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(file, format="PNG")


def upscale_factor(size: int, display_size: int) -> int:
    """The smallest integer factor that makes ``size`` pixels at least ``display_size`` (1 when they already are):
    8 px -> 8x, 14 px -> 5x, 28 px -> 3x, 32 px -> 2x for the default 64."""
    return max(1, math.ceil(display_size / size)) if size > 0 else 1


def upscale_nearest(images: Tensor, factor: int) -> Tensor:
    """Images ``(..., H, W)`` enlarged ``factor`` times by pixel repetition (nearest neighbour: no new values)."""
    if factor == 1:
        return images
    return images.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def save_grid(samples: Tensor, path: str | Path, nrow: int | None = None, display_size: int = 64) -> Tensor:
    """Clamp samples ``(N, C, H, W)`` to [0, 1], write them as one PNG grid (2 px padding) and return the grid.

    Images smaller than ``display_size`` pixels are enlarged by an integer factor, nearest neighbour, so that an
    8x8 or 28x28 grid can be looked at (0 keeps them as they are).
    """
    images = samples.detach().float().clamp(0, 1).cpu()
    images = upscale_nearest(images, upscale_factor(max(images.shape[-2:]), display_size) if display_size else 1)
    grid = make_grid(images, nrow=nrow or max(1, int(math.sqrt(images.shape[0]))), padding=2)
    write_png(grid, path)
    return grid
